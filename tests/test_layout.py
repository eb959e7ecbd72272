"""The floor plan, checked against the code: every import points down, no cycles, small files,
a thin run function, one installed package, and a strategy added as one file plus one YAML.

The floors (README "Layout"), from the ground up:

    0  ttscale/                 kernel: records, contracts, ledger, retry, store, estimators, metrics
    1  backends/  sandbox/      engines; isolated program execution and the unit-test harness
    2  tasks/  verifiers/       problems and grading; scorers (tasks never import verifiers)
    3  strategies/              the algorithms
    4  report/                  figures and reports from run directories
    5  runner/                  the composition root
    6  bench/                   the benchmark
    7  scripts/                 entry points

A module may import its own floor (another module of its folder) or any floor below. Imports
inside `if TYPE_CHECKING:` are for annotations only (the contracts name `SolveContext` that
way) and are left out; imports inside functions count.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"ttscale": 0, "backends": 1, "sandbox": 1, "tasks": 2, "verifiers": 2, "strategies": 3,
          "report": 4, "runner": 5, "bench": 6, "scripts": 7}
MAX_LINES = 400


def source_files() -> list[Path]:
    return sorted(p for folder in FLOORS for p in (ROOT / folder).rglob("*.py"))


def folder_of_module(name: str) -> str | None:
    """The project folder a module name lives in: `ttscale.tasks.code` -> tasks, `ttscale.budget` -> ttscale."""
    parts = name.split(".")
    if parts[0] != "ttscale":
        return None
    if len(parts) > 1 and parts[1] in FLOORS and parts[1] != "ttscale":
        return parts[1]
    return "ttscale"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts if parts[0] == "ttscale" else ["ttscale", *parts])


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every runtime import of a project module in `path`."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    here = module_name(path)
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ttscale"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                pkg = here.split(".")[: len(here.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "ttscale":
                continue
            for a in node.names:  # `from ttscale.sandbox import harness` imports a module
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if _is_module(sub) else base))
    return out


def _is_module(name: str) -> bool:
    folder = folder_of_module(name)
    if folder is None:
        return False
    rest = name.split(".")[1 if folder == "ttscale" else 2:]
    base = ROOT / folder / Path(*rest) if rest else ROOT / folder
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph() -> dict[str, list[tuple[int, str]]]:
    return {module_name(p): project_imports(p) for p in source_files()}


def violations(graph: dict[str, list[tuple[int, str]]]) -> list[str]:
    bad = []
    for mod, imports in graph.items():
        src = folder_of_module(mod) if not mod.startswith("ttscale.scripts") else "scripts"
        for line, target in imports:
            dst = folder_of_module(target)
            if dst is None:
                continue
            if FLOORS[dst] > FLOORS[src]:
                bad.append(f"{mod}:{line} imports {target}: floor {src} ({FLOORS[src]}) -> {dst} ({FLOORS[dst]})")
            elif src == "tasks" and dst == "verifiers":
                bad.append(f"{mod}:{line} imports {target}: tasks/ must not import verifiers/")
            elif src == "ttscale" and dst != "ttscale":
                bad.append(f"{mod}:{line} imports {target}: the kernel imports nothing else of the project")
    return bad


def cycles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    edges = {m: sorted({t for _, t in imps if t in graph and t != m}) for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


# ---------------------------------------------------------------------------
def test_every_import_points_down_and_tasks_do_not_import_verifiers():
    assert violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_catch_an_import_up_and_a_cycle():
    # The same checks on a made-up graph: an arrow up, the kernel importing a plugin, tasks ->
    # verifiers, and a loop.
    graph = {
        "ttscale.budget": [(3, "ttscale.tasks.code")],
        "ttscale.tasks.code": [(5, "ttscale.verifiers.judge")],
        "ttscale.verifiers.judge": [(7, "ttscale.strategies.steps")],
        "ttscale.strategies.steps": [(9, "ttscale.verifiers.judge")],
    }
    bad = violations(graph)
    assert any("kernel imports nothing" in b or "floor ttscale (0) -> tasks" in b for b in bad)
    assert any("tasks/ must not import verifiers/" in b for b in bad)
    assert any("floor verifiers (2) -> strategies (3)" in b for b in bad)
    assert cycles(graph) == [["ttscale.strategies.steps", "ttscale.verifiers.judge"]]


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in source_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_run_function_reads_as_its_steps():
    tree = ast.parse((ROOT / "runner" / "job.py").read_text())
    [fn] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    assert fn.end_lineno - fn.lineno + 1 <= 40


def test_pip_installs_exactly_one_top_level_package(tmp_path):
    """`pip install .` puts one top-level package, `ttscale`, into site-packages (the floors
    are its subpackages), so nothing of ours collides with another project's `tasks` -- and our
    submitit launchers into Hydra's plugin namespace `hydra_plugins` (Hydra takes launcher classes
    from there only), as `hydra_plugins/ttscale_launcher`, beside the other plugins."""
    import shutil

    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "build", "*.egg-info",
                                                              "__pycache__", "tests", "docs", "wandb", "bench_results"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, cwd=tmp_path)
    [wheel] = tmp_path.glob("ttscale-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ttscale", "hydra_plugins"}
    assert {n for n in names if n.startswith("hydra_plugins/")} == {"hydra_plugins/ttscale_launcher/__init__.py"}
    for sub in ("tasks", "strategies", "verifiers", "backends", "sandbox", "runner", "report", "bench"):
        assert f"ttscale/{sub}/__init__.py" in names, sub
    # installed (no dependencies: they are this venv's), it imports from site-packages alone
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["hydra_plugins", "ttscale"]
    code = "import ttscale.strategies.particle_filter as m, ttscale.runner as r; print(m.__file__); print(r.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env=dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE="1"),
                         ).stdout.split()
    assert all(line.startswith(str(target)) for line in out), out


# --------------------------------------------------------------------------- a strategy added from outside
from ttscale.strategies.sampling import sample_candidates  # noqa: E402
from ttscale.strategy import RequestShape, Strategy  # noqa: E402
from ttscale.types import Result  # noqa: E402


class LastOfN(Strategy):
    """A strategy that lives only here: sample n, answer with the last sample's answer."""

    name = "last_of_n"
    count_params = ("n",)

    def __init__(self, n: int = 3, temperature: float = 0.7, max_tokens: int = 64) -> None:
        self.n, self.temperature, self.max_tokens = n, temperature, max_tokens

    def request_shape(self) -> RequestShape:
        return RequestShape(self.n, self.max_tokens, "max_tokens")

    async def solve(self, problem, ctx):
        cands = await sample_candidates(problem, ctx, self.n, self.temperature, 1.0, self.max_tokens)
        return Result(problem_id=problem.id, answer=cands[-1].answer if cands else None, candidates=cands,
                      selected=len(cands) - 1 if cands else None)


LAST_OF_N_YAML = """\
_target_: tests.test_layout.LastOfN
n: 3
temperature: ${sampling.temperature}
max_tokens: ${sampling.max_tokens}
"""


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "ext_conf"
    (conf / "strategy").mkdir(parents=True, exist_ok=True)
    (conf / "strategy" / "last_of_n.yaml").write_text(LAST_OF_N_YAML)
    search = f"hydra.searchpath=[file://{ROOT / 'tests' / 'sweep_conf'},file://{conf}]"
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), search, "backend=fake", "logger=none",
                           f"run.root={tmp_path / 'out'}", "run.progress=false", "strategy=last_of_n",
                           "task.num_problems=4", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_a_strategy_is_one_python_file_and_one_yaml(tmp_path):
    """Defined in this module with its own config file (nothing else in the project names it):
    it composes, passes validation, runs through the runner and is recorded like any other."""
    p = _cli(tmp_path, "sampling.max_tokens=32")
    assert p.returncode == 0, p.stderr[-3000:]
    [run_dir] = (tmp_path / "out" / "default").iterdir()
    assert run_dir.name.startswith("arithmetic-last_of_n-")
    recs = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(len(r["candidates"]) == 3 and r["selected"] == 2 for r in recs)
    assert json.loads((run_dir / "metrics.json").read_text())["problems"] == 4
    # validation asks the built strategy: its counts and its request shape against the budget
    bad = _cli(tmp_path, "strategy.n=0")
    assert bad.returncode == 2 and "strategy.n must be an integer >= 1, got 0" in bad.stderr
    small = _cli(tmp_path, "sampling.max_tokens=32", "budget=tokens", "budget.max_tokens=16")
    assert small.returncode == 2 and "budget.max_tokens=16" in small.stderr and "sampling.max_tokens=32" in small.stderr


@pytest.mark.parametrize("path", ["runner/job.py", "runner/validation.py", "runner/plan.py", "runner/solve.py"])
def test_the_runner_knows_no_strategy_key_names_and_probes_nothing(path):
    src = (ROOT / path).read_text()
    for name in ('"M"', '"k"', '"beam_width"', '"chunk_tokens"', '"max_expansions"', "getattr(", "hasattr("):
        assert name not in src, (path, name)
