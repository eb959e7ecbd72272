"""Sweeps: run identity, relaunching finished sweeps, the launchers (basic, submitit local; SLURM on a
real cluster is tests/test_slurm_cluster.py), the experiment configs, and W&B offline runs.

The subprocess sweeps run `scripts/run.py -m` on the fake engine (tests/sweep_conf/backend/fake.yaml)
except the one marked `engine`, which runs the real vLLM CPU engine through submitit's local executor."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from tests.helpers import CRASH_MARK
from ttscale.backends.fake import FakeEngine
from tests.test_merge import make_cfg, responder
from ttscale.results import iter_records
from ttscale.runner import run
from ttscale.runner.identity import run_dir_for, run_identity

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
RUN = [sys.executable, str(ROOT / "scripts" / "run.py")]
FAKE_BACKEND = [f"hydra.searchpath=[file://{ROOT / 'tests' / 'sweep_conf'}]", "backend=fake"]


# --------------------------------------------------------------------------- helpers
def compose_full(*overrides: str):
    """The config with its hydra node (launcher, sweeper, ...)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def job_cfg(cfg):
    """What the runner of a job gets: Hydra removes the hydra node before calling the task."""
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def sweep(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 600) -> tuple[subprocess.CompletedProcess, float]:
    e = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1", **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.run([*RUN, "-m", f"run.root={tmp_path}", *args], capture_output=True, text=True, env=e,
                       cwd=ROOT, timeout=timeout)
    dt = time.perf_counter() - t0
    assert p.returncode == 0, f"sweep failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p, dt


def run_dirs_under(root: Path, experiment: str = "default") -> list[Path]:
    d = root / experiment
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.exists() else []


def snapshot(dirs: list[Path]) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for d in dirs for f in sorted(d.glob("records*.jsonl"))}


def submitit_logs(root: Path, skip: frozenset = frozenset()) -> list[str]:
    """The submitit jobs' stdout/stderr logs (except the files in `skip`)."""
    return [p.read_text() for p in sorted(root.glob(".hydra/multirun/*/*/.submitit/*/*_log.*")) if p not in skip]


def wandb_records(run_file: Path):
    """(record type, protobuf Record) of an offline W&B run file (`run-<id>.wandb`): W&B's
    header, then a LevelDB-style log of 32 KiB blocks of length-prefixed chunks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + n > len(data):
            return  # the writer is not done with this chunk yet
        chunk = data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind == 0 and n == 0:  # zero padding up to the block's end
            pos += left - 7
            continue
        if kind in (1, 2):  # full, first
            buf = chunk
        elif kind in (3, 4):  # middle, last
            buf += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec.WhichOneof("record_type"), rec


def wandb_offline_run(run_dir: Path) -> dict:
    """What an offline W&B run under a run directory holds: id, group, tags, config and summary.

    (wandb 0.31 keeps an offline run's summary in the run file, not in files/wandb-summary.json.)"""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert runs, f"no offline W&B run under {run_dir}"
    out: dict = {"dir": runs[-1], "summary": {}, "config": {}}
    [run_file] = runs[-1].glob("run-*.wandb")
    deadline = time.time() + 60  # W&B's service may still be writing the file after run.finish()
    while not any(kind == "exit" for kind, _ in wandb_records(run_file)) and time.time() < deadline:
        time.sleep(0.5)
    for kind, rec in wandb_records(run_file):
        if kind == "run":
            out.update(id=rec.run.run_id, group=rec.run.run_group, tags=list(rec.run.tags))
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in rec.summary.update if u.key})
    summary_file = runs[-1] / "files" / "wandb-summary.json"  # older wandb versions write it
    if summary_file.exists():
        out["summary"].update(json.loads(summary_file.read_text()))
    return out


# --------------------------------------------------------------------------- identity
def test_run_identity_ignores_logging_launcher_concurrency_and_shards(tmp_path):
    base = compose_full("strategy.n=4", "logger=none")
    same = [
        compose_full("strategy.n=4", "logger=wandb", "hydra/launcher=slurm", "run.concurrency=3", "run.progress=false",
                     "run.summary=false", "run.fsync=false", "run.experiment=other", f"run.root={tmp_path}",
                     "run.shard=1", "run.num_shards=4", "run.tags=[a]", "logger.project=p"),
        compose_full("strategy.n=4", "hydra/launcher=local", "hydra.launcher.timeout_min=5"),
    ]
    different = [compose_full("strategy.n=5"), compose_full("strategy.n=4", "seed=1"),
                 compose_full("strategy.n=4", "sampling.temperature=0.5"), compose_full("strategy.n=4", "task.limit=3"),
                 compose_full("strategy=best_of_n", "strategy.n=4")]
    assert same[0].hydra.launcher._target_.endswith("SlurmLauncher")
    base, same, different = job_cfg(base), [job_cfg(c) for c in same], [job_cfg(c) for c in different]
    h = run_identity(base)[1]
    assert all(run_identity(c)[1] == h for c in same)
    assert len({h, *(run_identity(c)[1] for c in different)}) == 1 + len(different)
    # the hash is also the run directory's suffix, whatever the root and experiment
    assert run_dir_for(same[0])[0].name.endswith(h) and run_dir_for(same[0])[0].parent.name == "other"


# --------------------------------------------------------------------------- relaunching (fake engine, in process)
GRID = [(s, n) for s in (["strategy=majority_vote"], ["strategy=best_of_n", "verifier=self_certainty"]) for n in (1, 4)]


def run_grid(root, engine_factory):
    engines = []
    for ov, n in GRID:
        eng = engine_factory()
        engines.append(eng)
        run(make_cfg(root, *ov, f"strategy.n={n}", problems=5), engine=eng)
    return engines


def test_relaunching_a_finished_sweep_generates_nothing_and_loads_no_engine(tmp_path, monkeypatch):
    run_grid(tmp_path, lambda: FakeEngine(responder))
    dirs = run_dirs_under(tmp_path)
    assert len(dirs) == len(GRID)
    before = snapshot(dirs)
    metrics = {d: json.loads((d / "metrics.json").read_text()) for d in dirs}
    import ttscale.runner.job as runner_job

    monkeypatch.setattr(runner_job, "get_engine", lambda *a: pytest.fail("an engine was loaded for a finished run"))
    for ov, n in GRID:
        run(make_cfg(tmp_path, *ov, f"strategy.n={n}", problems=5))
    assert snapshot(dirs) == before  # not a byte appended
    for d in dirs:
        again = json.loads((d / "metrics.json").read_text())
        assert again["accuracy"] == metrics[d]["accuracy"] and again["curves"] == metrics[d]["curves"]


def test_an_unfinished_sweep_completes_only_what_is_missing(tmp_path):
    run_grid(tmp_path, lambda: FakeEngine(responder))
    dirs = run_dirs_under(tmp_path)
    victim = dirs[1]
    lines = (victim / "records.jsonl").read_bytes().splitlines(keepends=True)
    (victim / "records.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:7])  # killed mid-write
    engines = run_grid(tmp_path, lambda: FakeEngine(responder))
    assert sorted(len(e.requests) for e in engines) == [0, 0, 0, 3]
    assert sorted(r["problem_id"] for r in iter_records(victim)) == [f"q{i}" for i in range(5)]


# --------------------------------------------------------------------------- launchers (subprocess, fake engine)
def test_basic_launcher_sweep_runs_every_configuration_and_relaunch_is_a_no_op(tmp_path):
    args = [*FAKE_BACKEND, "strategy=best_of_n,majority_vote", "strategy.n=1,4", "verifier=self_certainty",
            "task.limit=3", "sampling.max_tokens=16", "logger=none", "run.progress=false"]
    p, _ = sweep(tmp_path, *args)
    dirs = run_dirs_under(tmp_path)
    assert len(dirs) == 4
    assert {d.name.rsplit("-", 1)[0] for d in dirs} == {"arithmetic-best_of_n", "arithmetic-majority_vote"}
    assert p.stdout.count("== ") == 4  # each job's summary
    before = snapshot(dirs)
    p2, _ = sweep(tmp_path, *args)
    assert snapshot(dirs) == before and p2.stdout.count("on 3 arithmetic problems") == 4


def _job_times(log: str) -> tuple[float, float]:
    ts = re.findall(r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\)", log)
    conv = [time.mktime(time.strptime(t.split(",")[0], "%Y-%m-%d %H:%M:%S")) + int(t.split(",")[1]) / 1000 for t in ts]
    return conv[0], conv[-1]


def test_submitit_local_launcher_runs_jobs_one_at_a_time(tmp_path):
    args = ["hydra/launcher=local", *FAKE_BACKEND, "strategy.n=1,2", "task.limit=2", "sampling.max_tokens=16",
            "logger=none", "run.progress=false"]
    sweep(tmp_path, *args, env={"TMPDIR": str(tmp_path)})
    dirs = run_dirs_under(tmp_path)
    assert len(dirs) == 2 and all((d / "metrics.json").exists() for d in dirs)
    outs = [t for t in submitit_logs(tmp_path) if "Job completed successfully" in t]
    assert len(outs) == 2
    (s1, e1), (s2, e2) = sorted(_job_times(t) for t in outs)
    assert s2 >= e1 - 0.01  # the lock file made the second job wait for the first
    assert (tmp_path / "ttscale-submitit-local.lock").exists()
    # the same configurations through the basic launcher are the same runs: nothing is redone
    before = snapshot(dirs)
    sweep(tmp_path, *args[1:])
    assert run_dirs_under(tmp_path) == dirs and snapshot(dirs) == before


def test_submitit_launcher_waits_for_every_job_and_names_the_failed_ones_logs(tmp_path):
    """hydra_plugins/ttscale_launcher through the local executor (on SLURM: tests/test_slurm_cluster.py):
    the crashing first job does not stop the sweep from waiting for the second."""
    args = ["hydra/launcher=local", "hydra.launcher.setup=[]", *FAKE_BACKEND, "backend=crash,fake", "task.limit=2",
            "logger=none", "run.progress=false"]
    e = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    p = subprocess.run([*RUN, "-m", f"run.root={tmp_path}", *args], capture_output=True, text=True, env=e, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 1
    [line] = [x for x in p.stderr.splitlines() if x.startswith("ttscale: job #")]
    m = re.fullmatch(r"ttscale: job #0 \((\d+)\) failed: (.*); overrides: (.*backend=crash.*); log: (\S+) \(and \.out\)", line)
    assert m, line
    assert CRASH_MARK in m.group(2)
    log = Path(m.group(4))
    assert log.name == f"{m.group(1)}_0_log.err" and CRASH_MARK in log.read_text()
    [d] = run_dirs_under(tmp_path)  # the second job ran to the end
    assert json.loads((d / "metrics.json").read_text())["problems"] == 2


def test_submitit_launcher_hands_a_rejected_configuration_to_the_sweep(tmp_path):
    """A submitit job that rejects its configuration (bad input): the sweep counts it as the basic
    launcher does -- the other job runs, the sweep exits 2 listing it."""
    args = ["hydra/launcher=local", "hydra.launcher.setup=[]", *FAKE_BACKEND, "task.limit=2,-1", "logger=none",
            "run.progress=false"]
    e = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    p = subprocess.run([*RUN, "-m", f"run.root={tmp_path}", *args], capture_output=True, text=True, env=e, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    [line] = [x for x in p.stderr.splitlines() if x.startswith("ttscale: job #")]
    assert line.startswith("ttscale: job #1 (") and " rejected: ConfigError: task: " in line and "task.limit=-1" in line
    assert "ttscale: 1 configuration(s) of the sweep were rejected:" in p.stderr
    [d] = run_dirs_under(tmp_path)
    assert json.loads((d / "metrics.json").read_text())["problems"] == 2


# --------------------------------------------------------------------------- launcher and experiment configs
def test_launcher_configs_follow_the_submitit_schema():
    from hydra.utils import instantiate

    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

    slurm = compose_full("hydra/launcher=slurm").hydra.launcher
    assert set(slurm) == set(OmegaConf.structured(SlurmQueueConf))  # extends the registered schema
    assert slurm.gpus_per_node == 1 and slurm.array_parallelism > 1 and slurm.max_num_timeout > 0
    # a CPU node: no GPU request, the cluster's default CPUs and memory, the rest as slurm.yaml
    cpu = compose_full("hydra/launcher=slurm_cpu").hydra.launcher
    assert (cpu.gpus_per_node, cpu.cpus_per_task, cpu.mem_gb) == (None, None, None)
    raw_slurm, raw_cpu = OmegaConf.to_container(slurm), OmegaConf.to_container(cpu)  # unresolved
    differ = {k for k in raw_slurm if raw_slurm[k] != raw_cpu[k]}
    assert differ == {"gpus_per_node", "cpus_per_task", "mem_gb"}
    local = compose_full("hydra/launcher=local").hydra.launcher
    assert set(local) - {"setup"} == set(OmegaConf.structured(LocalQueueConf))
    for node in (slurm, cpu, local):
        launcher = instantiate(node, _convert_="partial")
        assert type(launcher).__name__ in ("SlurmLauncher", "LocalLauncher")
        assert type(launcher).__module__ == "hydra_plugins.ttscale_launcher"  # reports failed jobs' logs


def _sweep_size(cfg) -> int:
    n = 1
    for v in cfg.hydra.sweeper.params.values():
        n *= len(str(v).split(","))
    return n


def test_arithmetic_scaling_experiment_composes_and_dry_runs(tmp_path):
    cfg = compose_full("+experiment=arithmetic_scaling")
    assert cfg.run.experiment == "arithmetic_scaling"
    assert {"strategy", "strategy.n", "seed"} <= set(cfg.hydra.sweeper.params)
    # every job of the study composes and builds (no model is loaded in a dry run)
    p, _ = sweep(tmp_path, "+experiment=arithmetic_scaling", "run.dry_run=true", "logger=none")
    assert p.stdout.count("run dir:") == _sweep_size(cfg)
    assert "error" not in p.stderr.lower()


def test_arithmetic_scaling_a_star_runs_land_in_the_same_experiment(tmp_path):
    cfg = compose_full("+experiment=arithmetic_scaling_a_star")
    base = compose_full("+experiment=arithmetic_scaling")
    assert cfg.run.experiment == base.run.experiment and cfg.task == base.task and cfg.sampling == base.sampling
    assert cfg.strategy._target_.endswith("AStarDecoding") and "strategy.max_expansions" in cfg.hydra.sweeper.params
    p, _ = sweep(tmp_path, "+experiment=arithmetic_scaling_a_star", "run.dry_run=true", "logger=none")
    assert p.stdout.count("run dir:") == _sweep_size(cfg)
    assert "error" not in p.stderr.lower()


def test_math500_scaling_experiment_composes():
    cfg = compose_full("+experiment=math500_scaling")
    assert cfg.run.experiment == "math500_scaling" and cfg.task.name == "math500"
    assert {"strategy", "strategy.n", "seed"} <= set(cfg.hydra.sweeper.params)
    assert len(str(cfg.hydra.sweeper.params.strategy).split(",")) >= 3
    assert _sweep_size(cfg) >= 18
    # each strategy of the study composes with the study's settings
    for s in str(cfg.hydra.sweeper.params.strategy).split(","):
        c = compose_full("+experiment=math500_scaling", f"strategy={s}")
        OmegaConf.to_container(c.strategy, resolve=True)


# --------------------------------------------------------------------------- W&B
def test_wandb_offline_run_has_flat_summary_and_run_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path, "strategy=best_of_n", "verifier=self_certainty", "strategy.n=4", "logger=wandb",
                   "run.experiment=wb")
    with open_dict(cfg):
        cfg.logger.log_table = False
    m = run(cfg, engine=FakeEngine(responder))
    [d] = run_dirs_under(tmp_path, "wb")
    wb = wandb_offline_run(d)
    h = run_identity(cfg)[1]
    assert wb["id"] == h and wb["group"] == "wb"
    assert {"strategy:best_of_n", "n:4", "seed:0"} <= set(wb["tags"])
    s = wb["summary"]
    for key in ("accuracy", "accuracy_ci_low", "pass@4", "maj@4", "best_of@4", "tokens/generated_mean",
                "tokens/generated_total", "flops/all_mean", "verifier/calls_total", "run/wall_time",
                "finish/eos_share", "finish/candidates"):
        assert s[key] == pytest.approx(m[key]), key
    assert "weighted@4" not in m  # raw mean log-probs are negative: not summed as weights
    c = wb["config"]
    assert c["seed"] == 0 and c["strategy"]["n"] == 4 and c["environment"]["engine"]["engine"] == "fake"
    hw = c["environment"]
    assert hw["cpu_count"] >= 1 and hw["memory_gb"] > 0 and "gpu_count" in hw and "python" in hw


# --------------------------------------------------------------------------- the real engine
@pytest.mark.engine
@pytest.mark.slow
def test_submitit_local_sweep_on_the_real_engine(tmp_path):
    """Two configurations, each a submitit job with its own vLLM CPU engine (one at a time), two
    offline W&B runs with the summary metrics; relaunching starts no engine and changes nothing."""
    args = ["hydra/launcher=local", "strategy=majority_vote", "strategy.n=1,2", "task.limit=2",
            "sampling.max_tokens=24", "run.experiment=real", "run.progress=false", "logger.log_table=false",
            *REAL_ENGINE_OVERRIDES]
    env = {"TMPDIR": str(tmp_path)}
    _, t_first = sweep(tmp_path, *args, env=env, timeout=900)
    dirs = run_dirs_under(tmp_path, "real")
    assert len(dirs) == 2
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        assert m["problems"] == 2 and m["failed"] == 0 and m["tokens/generated_total"] > 0
        wb = wandb_offline_run(d)
        assert wb["group"] == "real" and wb["summary"]["accuracy"] == pytest.approx(m["accuracy"])
        assert wb["summary"]["tokens/generated_mean"] == pytest.approx(m["tokens/generated_mean"])
        assert "pass@1" in wb["summary"] and "time/wall_total" in wb["summary"]
        env_json = json.loads((d / "environment.json").read_text())
        assert env_json["engine"]  # engine.info(): model, dtype, vLLM version, batch settings
    first_logs = "\n".join(submitit_logs(tmp_path))
    assert ENGINE_START_MARK in first_logs
    before = snapshot(dirs)
    first_files = frozenset(tmp_path.glob(".hydra/multirun/*/*/.submitit/*/*_log.*"))
    _, t_again = sweep(tmp_path, *args, env=env, timeout=600)
    again_logs = "\n".join(submitit_logs(tmp_path, skip=first_files))
    assert again_logs.count("Job completed successfully") >= 2
    assert ENGINE_START_MARK not in again_logs  # no engine was started
    assert snapshot(dirs) == before
    assert t_again < t_first
    print(f"\nsubmitit local sweep on the real engine: first {t_first:.1f}s, relaunch {t_again:.1f}s")


# Each job's engine reserves 10% of host memory (weights + KV cache): enough for 2 problems,
# and room beside the session's `real_engine` if this pytest process already holds it.
REAL_ENGINE_OVERRIDES = ["backend.gpu_memory_utilization=0.1"]
ENGINE_START_MARK = "ttscale: engine ready"  # the one line a run prints when it has started an engine


# --------------------------------------------------------------------------- one engine per process
def test_a_sweep_in_one_process_keeps_one_engine_across_seeds_and_replaces_it_for_new_settings(monkeypatch):
    import ttscale.runner.engines as runner

    built, stopped = [], []

    class Eng:
        def __init__(self, **kw):
            self.kw = kw
            built.append(self)

        def shutdown(self):
            stopped.append(self)

        def info(self):
            return {"engine": "stub"}

    monkeypatch.setattr(runner, "_ENGINES", {})
    monkeypatch.setattr(runner, "instantiate", lambda node: Eng(**OmegaConf.to_container(node, resolve=True)))
    backend = lambda **kw: OmegaConf.create({"_target_": "x.Eng", "model": "m", "gpu_memory_utilization": 0.3, **kw})  # noqa: E731
    a = runner.get_engine(backend(seed=0))
    assert runner.get_engine(backend(seed=1)) is a  # requests carry their own seeds
    b = runner.get_engine(backend(seed=0, model="other"))
    assert b is not a and stopped == [a]  # the first one's memory is freed before the next loads
    assert runner.get_engine(backend(seed=3, model="other")) is b and len(built) == 2
