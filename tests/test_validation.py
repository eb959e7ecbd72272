"""Bad input is refused before any compute: one clear line on stderr naming the key or
file, exit status 2, and no run directory (nor Hydra job folder) left behind.

The command-line cases run `scripts/run.py` as a subprocess (about a second each: no
model loads). The offline Hub case sets HF_HUB_OFFLINE=1 so it does not wait on DNS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from ttscale.runner import job as runner_job
from ttscale.runner import ConfigError, run
from ttscale.runner.cli_checks import check_group_choices, check_override_keys
from ttscale.runner.plan import prepare
from ttscale.runner.validation import validate_config

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def run_cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run.py"), *args, f"run.root={root}", "logger=none"],
        cwd=ROOT, env=e, capture_output=True, text=True, timeout=120,
    )


def assert_rejected(p: subprocess.CompletedProcess, root: Path, *needles: str) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(lines) == 1, p.stderr  # one line, no traceback
    line = lines[0]
    assert line.startswith("ttscale: error: "), line
    for n in needles:
        assert n in line, (n, line)
    # Nothing left behind: no run directory, and Hydra's job folder was removed too.
    assert not root.exists() or list(root.iterdir()) == [], sorted(str(p) for p in root.rglob("*"))
    return line


def test_unknown_strategy_lists_the_valid_names(tmp_path):
    line = assert_rejected(run_cli(tmp_path / "out", "strategy=nope"), tmp_path / "out",
                           "strategy=nope", "best_of_n", "particle_filter", "majority_vote")
    assert "Traceback" not in line


def test_unknown_name_in_a_sweep_is_refused_before_any_job(tmp_path):
    p = run_cli(tmp_path / "out", "-m", "strategy=majority_vote,nope", "strategy.n=1,2")
    assert_rejected(p, tmp_path / "out", "'nope'", "best_of_n")


def test_unknown_model_preset_points_to_model_path(tmp_path):
    assert_rejected(run_cli(tmp_path / "out", "model=my-model"), tmp_path / "out", "model=my-model", "smollm2",
                    "model.path=")


def test_unknown_key_names_the_keys_there_are(tmp_path):
    assert_rejected(run_cli(tmp_path / "out", "strategy.nn=3"), tmp_path / "out",
                    "strategy.nn=3", "no key 'nn' in strategy", "max_tokens, n, temperature", "+strategy.nn=")
    assert_rejected(run_cli(tmp_path / "out", "verifier.model=x"), tmp_path / "out",
                    "verifier is null", "verifier=<name>")


def test_key_check_leaves_additions_and_plain_overrides_alone():
    assert check_override_keys(["+foo=1", "++bar.baz=2", "seed=3", "strategy.n=4", "run.retry.attempts=2"]) is None
    assert check_override_keys(["strategy=particle_filter", "strategy.step.max_steps=3"]) is None
    assert "no key 'step' in strategy" in check_override_keys(["strategy=best_of_n", "strategy.step.max_steps=3"])
    assert "no key 'temp' in sampling" in check_override_keys(["-m", "sampling.temp=0.1,0.2"])


def _model_dir(tmp_path: Path, config: bool, weights: bool) -> Path:
    d = tmp_path / "ckpt"
    d.mkdir()
    if config:
        (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    if weights:
        (d / "model.safetensors").write_bytes(b"\0" * 16)
    return d


BAD_INPUTS = [  # (arguments, what the one line must name)
    (["strategy.n=0"], ["strategy.n", ">= 1", "got 0"]),
    (["strategy.n=abc"], ["strategy.n", "'abc'"]),
    (["sampling.temperature=-0.5"], ["sampling.temperature", ">= 0"]),
    (["strategy=best_of_n", "verifier=self_certainty", "strategy.top_p=0"], ["strategy.top_p", "(0, 1]"]),
    (["sampling.top_p=1.5"], ["sampling.top_p", "(0, 1]"]),
    (["sampling.max_tokens=0"], ["sampling.max_tokens"]),
    (["seed=abc"], ["seed", "'abc'"]),
    (["budget=tokens", "budget.max_tokens=100"], ["budget.max_tokens=100", "one step", "sampling.max_tokens=256"]),
    (["budget=tokens", "budget.max_tokens=0"], ["budget.max_tokens", ">= 1"]),
    (["budget.max_verifier_calls=-3"], ["budget.max_verifier_calls"]),
    (["strategy=particle_filter", "verifier=arithmetic_checker", "budget=tokens", "budget.max_tokens=50"],
     ["budget.max_tokens=50", "strategy.step.max_step_tokens=96"]),
    (["strategy=particle_filter", "verifier=arithmetic_checker", "strategy.step.delimiter="],
     ["strategy.step.delimiter", "non-empty"]),
    (["strategy=particle_filter", "verifier=arithmetic_checker", "strategy.step.max_steps=0"],
     ["strategy.step.max_steps"]),
    (["strategy=particle_filter"], ["needs a verifier", "verifier="]),
    (["strategy=beam_search", "verifier=arithmetic_checker", "strategy.beam_width=0"], ["strategy.beam_width"]),
    (["strategy=a_star", "verifier=arithmetic_checker", "strategy.k=0"], ["strategy.k"]),
    (["strategy=entropy_branching", "strategy.M=0"], ["strategy.M"]),
    (["strategy=particle_filter", "verifier=arithmetic_checker", "strategy.step.on_cut=split"],
     ["strategy.step.on_cut", "continue", "new_step"]),
    (["budget=tokens", "budget.samples=some"], ["budget.samples", "complete", "split"]),
    (["run.concurrency=0"], ["run.concurrency"]),
    (["run.retry.attempts=0"], ["run.retry.attempts"]),
    (["run.retry.timeout_s=-1"], ["run.retry.timeout_s"]),
    (["run.shard=3", "run.num_shards=2"], ["run.shard"]),
    (["task.limit=-1"], ["task.limit"]),
    (["task.offset=-2"], ["task.offset"]),
    (["task=math500", "task.path=/no/such/file.jsonl"], ["task.path=/no/such/file.jsonl", "no such file"]),
    (["task=math500", "task.path={tmp}"], ["task.path=", "is a directory"]),
    (["task=math500", "task.path={bad_jsonl}"], ["bad.jsonl:2", "malformed JSON"]),
    (["task=math500"], ["Hub", "unreachable", "task.path="]),
    (["model.path=/no/such/checkpoint"], ["model.path=/no/such/checkpoint", "no such model directory"]),
    (["model.path=Some-Org/not-cached-model"], ["model.path=Some-Org/not-cached-model", "local Hugging Face cache"]),
    (["model.path=embedded:nope"], ["model.path=embedded:nope", "embedded:smollm2-135m-instruct"]),
    (["strategy=best_of_n", "verifier=prm_hf", "verifier.model=Some-Org/no-such-prm"],
     ["verifier.model=Some-Org/no-such-prm", "local Hugging Face cache"]),
    (["strategy=nope"], ["strategy=nope", "no strategy named 'nope'", "best_of_n"]),
    (["model=my-model"], ["model=my-model", "model.path="]),
    (["+experiment=nope"], ["experiment", "nope"]),
    (["strategy.nn=3"], ["strategy.nn=3", "no key 'nn'"]),
    (["verifier.model=x"], ["verifier.model=x", "null"]),
    (["strategy.n=[1,2"], ["strategy.n=[1,2", "not a valid override"]),
    (["strategy.n=1,2"], ["strategy.n=1,2", "-m"]),
    (["hydra/launcher=nope"], ["hydra/launcher", "nope", "slurm"]),
    (["sampling.temperature=${nope}"], ["sampling.temperature", "nope"]),
    (["-m", "strategy=majority_vote,nope", "strategy.n=1,2"], ["no strategy named 'nope'"]),
]


def test_thirty_bad_inputs_each_give_one_line_exit_2_and_leave_nothing(tmp_path):
    """Each bad input, run as a user would (from an empty directory, default run.root): exit
    status 2, one line naming the field, file or override, and not a folder or file left."""
    assert len(BAD_INPUTS) >= 30
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"problem": "1+1", "answer": "2"}\n{not json\n')
    failures = []
    for i, (args, needles) in enumerate(BAD_INPUTS):
        args = [a.replace("{tmp}", str(tmp_path)).replace("{bad_jsonl}", str(bad_jsonl)) for a in args]
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        e = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "run.py"), *args, "logger=none"],
                           cwd=cwd, env=e, capture_output=True, text=True, timeout=120)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        ok = (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("ttscale: error: ")
              and all(n in lines[0] for n in needles) and not any(cwd.iterdir()))
        if not ok:
            failures.append((args, p.returncode, p.stderr[-600:], sorted(str(q) for q in cwd.rglob("*"))))
    assert failures == []


@pytest.mark.parametrize("config, weights, needle", [(False, True, "config.json"), (True, False, "no weights")])
def test_model_directory_without_checkpoint_is_refused_before_the_engine(tmp_path, config, weights, needle):
    d = _model_dir(tmp_path, config, weights)
    root = tmp_path / "out"
    assert_rejected(run_cli(root, f"model.path={d}"), root, f"model.path={d}", needle)


def test_cfg_job_shows_the_config_and_writes_nothing(tmp_path):
    root = tmp_path / "out"
    p = run_cli(root, "--cfg", "job", "strategy=best_of_n", "verifier=self_certainty")
    assert p.returncode == 0, p.stderr
    cfg = OmegaConf.create(p.stdout)
    assert cfg.strategy._target_ == "ttscale.strategies.best_of_n.BestOfN"
    assert not root.exists()


def test_dry_run_shows_the_plan_without_a_model_or_run_directory(tmp_path):
    root = tmp_path / "out"
    p = run_cli(root, "run.dry_run=true", "task.num_problems=7", "strategy.n=3")
    assert p.returncode == 0, p.stderr
    assert "7 problems, 0 already done, 7 to run" in p.stdout
    assert "majority_vote" in p.stdout and "'n': 3" in p.stdout and "embedded:smollm2-135m-instruct" in p.stdout
    assert not (root / "default").exists()


# ------------------------------------------------------------------ in process
def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=["logger=none", f"run.root={tmp_path}", "run.progress=false",
                                            "run.summary=false", *overrides])


def test_dry_run_never_asks_for_an_engine(tmp_path, monkeypatch, capsys):
    def no_engine(_):
        raise AssertionError("dry run loaded an engine")

    monkeypatch.setattr(runner_job, "get_engine", no_engine)
    assert run(cfg_for(tmp_path, "run.dry_run=true", "task.num_problems=3")) == {}
    assert "3 to run" in capsys.readouterr().out
    assert not (tmp_path / "default").exists()


def test_validation_runs_before_the_task_is_built(tmp_path):
    cfg = cfg_for(tmp_path, "strategy.n=0")
    with open_dict(cfg):
        cfg.task = OmegaConf.create({"_target_": "no.such.Task"})
    with pytest.raises(ConfigError, match=r"strategy\.n"):  # not the task's import error
        run(cfg)


def test_interpolated_values_are_reported_under_the_key_the_user_sets(tmp_path):
    with pytest.raises(ConfigError, match=r"^sampling\.temperature"):
        validate_config(cfg_for(tmp_path, "sampling.temperature=-1"))
    # A strategy's own value (no interpolation) is reported under strategy.*
    with pytest.raises(ConfigError, match=r"^strategy\.temperature"):
        validate_config(cfg_for(tmp_path, "strategy.temperature=-1"))


def test_budget_rule_allows_splitting_but_not_less_than_one_step(tmp_path, caplog):
    # 8 samples x 256 tokens = 2048: a 1024 budget is allowed (complete samples, 4 at a time), with a warning
    prepare(cfg_for(tmp_path, "budget=tokens", "budget.max_tokens=1024"))
    assert "pays for 4 complete samples" in caplog.text and "none is cut" in caplog.text
    prepare(cfg_for(tmp_path, "budget=tokens", "budget.max_tokens=256"))
    with pytest.raises(ConfigError, match="one step"):
        prepare(cfg_for(tmp_path, "budget=tokens", "budget.max_tokens=255"))
    # entropy branching: one chunk is the step
    prepare(cfg_for(tmp_path, "strategy=entropy_branching", "budget=tokens", "budget.max_tokens=32"))
    with pytest.raises(ConfigError, match="strategy.chunk_tokens=32"):
        prepare(cfg_for(tmp_path, "strategy=entropy_branching", "budget=tokens", "budget.max_tokens=31"))


@pytest.mark.parametrize("strategy", ["a_star", "beam_search", "dvts", "particle_filter", "entropic_particle_filter",
                                      "best_of_n", "best_of_majority", "weighted_majority", "majority_vote",
                                      "entropy_branching"])
def test_every_shipped_strategy_config_passes(tmp_path, strategy):
    prepare(cfg_for(tmp_path, f"strategy={strategy}", "verifier=arithmetic_checker"))
    prepare(cfg_for(tmp_path, f"strategy={strategy}", "verifier=arithmetic_checker", "budget=tokens"))


def test_group_choice_check_reads_conf_and_searchpath(tmp_path):
    assert check_group_choices(["strategy=best_of_n", "seed=3", "strategy.n=4"]) is None
    assert check_group_choices(["hydra/launcher=basic"]) is None  # Hydra's own groups: Hydra's business
    assert "no backend named 'fake'" in check_group_choices(["backend=fake"])
    extra = tmp_path / "conf" / "backend"
    extra.mkdir(parents=True)
    (extra / "fake.yaml").write_text("_target_: ttscale.backends.fake.FakeEngine\n")
    assert check_group_choices(["backend=fake", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]) is None


# ---------------------------------------------------------------- no silent no-ops
def test_unbounded_scores_under_a_logit_weighting_are_refused_in_one_line(tmp_path):
    root = tmp_path / "out"
    p = run_cli(root, "strategy=particle_filter", "verifier=self_certainty")
    assert_rejected(p, root, "strategy.weighting=logit", "[0, 1]", "self_certainty", "(-inf, 0]", "+verifier.output=prob")


@pytest.mark.parametrize("overrides, needle", [
    (["strategy=particle_filter"], "strategy.weighting=logit"),
    (["strategy=particle_filter", "strategy.weighting=log"], "strategy.weighting=log"),
    (["strategy=entropic_particle_filter"], "strategy.weighting=logit"),
    (["strategy=a_star"], "strategy a_star"),
    (["strategy=weighted_majority"], "strategy weighted_majority"),
    (["strategy=beam_search", "strategy.selection=weighted_vote"], "strategy.selection=weighted_vote"),
])
def test_strategies_that_need_bounded_scores_refuse_raw_log_probs(tmp_path, overrides, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        run(cfg_for(tmp_path, *overrides, "verifier=self_certainty", "run.dry_run=true"))
    assert not (tmp_path / "default").exists()
    # mapped to [0, 1] (its_hub's exp(mean log-prob)), the same combination is accepted
    assert run(cfg_for(tmp_path, *overrides, "verifier=self_certainty", "+verifier.output=prob", "run.dry_run=true")) == {}


@pytest.mark.parametrize("strategy", ["a_star", "beam_search", "dvts", "particle_filter", "entropic_particle_filter",
                                      "best_of_n", "best_of_majority", "weighted_majority", "majority_vote",
                                      "entropy_branching"])
@pytest.mark.parametrize("verifier", [["verifier=self_certainty", "+verifier.output=prob"], ["verifier=arithmetic_checker"],
                                      ["verifier=judge_steps"], ["verifier=oracle"], ["verifier=self_certainty"]])
def test_shipped_verifiers_declare_scores_every_shipped_strategy_can_read(tmp_path, strategy, verifier):
    from hydra.utils import instantiate

    from ttscale.runner.validation import check_score_range

    cfg = cfg_for(tmp_path, f"strategy={strategy}", *verifier)
    s, v = instantiate(cfg.strategy), instantiate(cfg.verifier)  # the built objects, not key names
    if verifier == ["verifier=self_certainty"] and strategy in REFUSE_RAW_LOGPROBS:
        with pytest.raises(ConfigError, match=r"\(-inf, 0\]"):
            check_score_range(s, v)
    else:
        check_score_range(s, v)


# The shipped strategies whose default settings cannot read raw mean log-probabilities.
REFUSE_RAW_LOGPROBS = {"a_star", "particle_filter", "entropic_particle_filter", "weighted_majority"}


def test_the_check_reads_the_built_verifier_not_its_name():
    from ttscale.strategies.particle_filter import ParticleFilter
    from ttscale.runner.validation import check_score_range
    from ttscale.verifiers.arithmetic_checker import ArithmeticChecker
    from ttscale.verifier import Verifier

    check_score_range(ParticleFilter(), ArithmeticChecker())
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):  # its configured levels leave [0, 1]
        check_score_range(ParticleFilter(), ArithmeticChecker(wrong_score=-1.0))
    check_score_range(ParticleFilter(weighting="identity"), ArithmeticChecker(wrong_score=-1.0))
    with pytest.raises(ConfigError, match=r"\(-inf, inf\)"):  # a verifier that declares nothing is unbounded
        check_score_range(ParticleFilter(), Verifier())
