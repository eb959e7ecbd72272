"""Small fake-engine runs for the report tests: a task whose solutions have several steps
with equations the arithmetic checker can judge, so a particle filter grows a real tree."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from tests.helpers import ToyTask
from ttscale.types import Problem, Reference

NUMS = re.compile(r"has (\d+) apples and buys (\d+) more")


class ApplesTask(ToyTask):
    """"Ann has a apples and buys b more" (a = i + 2, b = 2i + 3); the answer is a + b."""

    name = "apples"

    def load_all(self):
        out = []
        for i in range(self.num_problems):
            a, b = i + 2, 2 * i + 3
            out.append((Problem(id=f"p{i}", question=f"Ann has {a} apples and buys {b} more. How many apples does she have?"),
                        Reference(answer=str(a + b))))
        return out

    def answer_key(self, answer):
        return answer.strip()


def step_responder(prompt: str):
    """Four solutions of 3-4 steps: right, an arithmetic slip, a wrong operation, a detour."""
    m = NUMS.search(prompt)
    a, b = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
    return [
        (f"Ann starts with {a} apples.\n\nShe buys {b} more: {a} + {b} = {a + b}.\n\n"
         f"So she has {a + b} apples.\n\n\\boxed{{{a + b}}}", 0.3),
        (f"Ann starts with {a} apples.\n\nShe buys {b} more: {a} + {b} = {a + b + 1}.\n\n\\boxed{{{a + b + 1}}}", 0.3),
        (f"Ann has {a} apples.\n\nThen {a} * {b} = {a * b}.\n\n\\boxed{{{a * b}}}", 0.25),
        (f"Let me think step by step.\n\nShe buys {b} more: {a} + {b} = {a + b}.\n\n\\boxed{{{a + b}}}", 0.15),
    ]


def make_runs(root: Path, problems: int = 5, n: int = 4) -> list[Path]:
    """A particle-filtering run and a best-of-N run (arithmetic checker) under `root`;
    returns their run directories (PF first)."""
    from ttscale.backends.fake import FakeEngine
    from ttscale.runner import run
    from tests.test_merge import make_cfg

    dirs = []
    for strat in ("particle_filter", "best_of_n"):
        base = root / strat
        cfg = make_cfg(base, f"strategy={strat}", "verifier=arithmetic_checker", f"strategy.n={n}", problems=problems)
        with open_dict(cfg):
            cfg.task = OmegaConf.create({"_target_": "tests.report_fixtures.ApplesTask", "num_problems": problems})
        run(cfg, engine=FakeEngine(step_responder))
        [d] = [p for p in (base / "default").iterdir() if p.is_dir()]
        dirs.append(d)
    return dirs
