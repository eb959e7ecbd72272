"""`hydra/launcher=slurm` against a real one-node SLURM cluster (scripts/slurm_cluster.sh: slurmctld,
slurmd, slurmdbd, munge, on this machine), on the fake engine (tests/sweep_conf/backend/fake.yaml).

Start the cluster first (`sudo scripts/slurm_cluster.sh start`; `.ci/run` does it). Without one the
tests skip, saying so; in CI (`CI=true`) they fail. Each sweep runs from the repository root, so the
jobs (`python -m submitit.core._submit`, started in the submission's directory, with its environment)
import this checkout's code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.helpers import CRASH_MARK
from tests.test_sweeps import FAKE_BACKEND, ROOT, RUN, run_dirs_under
from ttscale.results import iter_records

pytestmark = pytest.mark.slow

CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
SLURM_DIR = Path(os.environ.get("TTSCALE_SLURM_DIR") or Path(os.environ.get("TMPDIR") or "/tmp") / "ttscale-slurm")
# the launcher for a CPU node (no GPU request) and a small, quiet fake-engine job
BASE = ["hydra/launcher=slurm_cpu", *FAKE_BACKEND, "sampling.max_tokens=16", "logger=none", "run.progress=false"]

@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The environment that reaches the running cluster (SLURM_CONF); skip or fail without one."""
    conf = os.environ.get("SLURM_CONF") or str(SLURM_DIR / "slurm.conf")
    env = dict(os.environ, SLURM_CONF=conf, TTSCALE_SLURM_DIR=str(Path(conf).parent))
    try:
        p = subprocess.run([str(CLUSTER), "status"], env=env, capture_output=True, text=True, timeout=60)
        up, why = p.returncode == 0, p.stderr.strip()
    except OSError as e:
        up, why = False, str(e)
    if not up:
        msg = f"no SLURM cluster is running ({why}); start one with `sudo scripts/slurm_cluster.sh start`"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return {"SLURM_CONF": conf}


def sweep(tmp_path: Path, slurm: dict, experiment: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """`scripts/run.py -m` through SLURM; the jobs of this sweep are cancelled if it does not end."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", **slurm)
    env.pop("HYDRA_FULL_ERROR", None)  # what a user sees
    cmd = [*RUN, "-m", f"run.root={tmp_path}", f"run.experiment={experiment}", *BASE, *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    finally:
        subprocess.run(["scancel", f"--name=ttscale-{experiment}"], env=env, capture_output=True, timeout=30)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"sweep failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p


def job_folders(tmp_path: Path) -> dict[str, Path]:
    """SLURM job id -> submitit folder of each job of the sweeps under tmp_path ("12_0": array task 0)."""
    return {d.name: d for d in tmp_path.glob(".hydra/multirun/*/*/.submitit/*") if (d / f"{d.name}_submitted.pkl").exists()}


def sacct(slurm: dict, job: str, *fields: str, rows: int, duplicates: bool = False) -> list[dict[str, str]]:
    """sacct's rows (allocations, not steps) for a job or a whole job array, once it has `rows` of
    them, all finished: slurmctld hands the records to slurmdbd a moment after the jobs end."""
    fields = ("JobID", "JobName", "State", *fields)
    cmd = ["sacct", "-n", "-P", "-X", "-j", job, "-o", ",".join(fields)] + (["-D"] if duplicates else [])
    deadline = time.time() + 30
    while True:
        out = subprocess.run(cmd, env=dict(os.environ, **slurm), capture_output=True, text=True, timeout=30, check=True)
        got = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line]
        done = all(r["State"] in FINAL_STATES for r in got)
        if (len(got) >= rows and done) or time.time() > deadline:
            return got
        time.sleep(1)


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "REQUEUED", "NODE_FAIL", "OUT_OF_MEMORY"}


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# --------------------------------------------------------------------------- job arrays
def test_a_sweep_of_two_configurations_is_one_job_array_and_both_runs_finish(tmp_path, slurm):
    ok(sweep(tmp_path, slurm, "slurm_array", "strategy.n=1,2", "task.limit=3", "hydra.launcher.timeout_min=5"))
    dirs = run_dirs_under(tmp_path, "slurm_array")
    assert len(dirs) == 2
    assert sorted(metrics(d)["problems"] for d in dirs) == [3, 3] and all(metrics(d)["failed"] == 0 for d in dirs)
    jobs = sorted(job_folders(tmp_path))
    array = {j.split("_")[0] for j in jobs}
    assert len(array) == 1 and sorted(int(j.split("_")[1]) for j in jobs) == [0, 1], jobs  # one sbatch, two tasks
    [a] = array
    rows = sacct(slurm, a, "Timelimit", rows=2)
    assert [(r["JobID"], r["State"]) for r in rows] == [(f"{a}_0", "COMPLETED"), (f"{a}_1", "COMPLETED")]
    assert {(r["JobName"], r["Timelimit"]) for r in rows} == {("ttscale-slurm_array", "00:05:00")}


def test_shards_as_array_tasks_merge_into_one_run(tmp_path, slurm):
    ok(sweep(tmp_path, slurm, "slurm_shards", "run.num_shards=2", "run.shard=0,1", "task.limit=5", "strategy.n=2"))
    [d] = run_dirs_under(tmp_path, "slurm_shards")
    assert len(list(d.glob("records.shard-*-of-002.jsonl"))) == 2
    recs = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(5))  # every problem once, in order
    m = metrics(d)
    assert m["problems"] == 5 and m["run/num_shards"] == 2 and m["run/partial"] is False
    assert len({j.split("_")[0] for j in job_folders(tmp_path)}) == 1  # the shards were one job array


# --------------------------------------------------------------------------- time limit, crash, rejection
def test_a_job_at_its_time_limit_is_signalled_requeued_and_resumes(tmp_path, slurm):
    """A one-minute limit and 28 problems one at a time at 2.5 s each (70 s of work). slurmctld looks
    at time limits every 30 s and sends `--signal=USR2@5` once fewer than 5 + 30 s are left, so each
    run of the job gets SIGUSR2 25-55 s after it starts, always before the limit (a 35 s window):
    the first run cannot finish; submitit requeues the job (up to max_num_timeout=5 times here) and
    each new run skips the problems already on disk."""
    ok(sweep(tmp_path, slurm, "slurm_timeout", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",
             "hydra.launcher.max_num_timeout=5", "+backend.delay=2.5", "run.concurrency=1", "task.limit=28",
             "strategy.n=1", timeout=420))
    [d] = run_dirs_under(tmp_path, "slurm_timeout")
    ids = [r["problem_id"] for r in iter_records(d)]
    assert len(ids) == 28 and len(set(ids)) == 28  # every problem exactly once
    m = metrics(d)
    assert m["problems"] == 28 and m["failed"] == 0
    [job] = job_folders(tmp_path)  # one configuration: one job, run again and again
    runs = sacct(slurm, job, "Start", "End", duplicates=True, rows=2)  # one row per run of the job
    states = [r["State"] for r in runs]
    assert states[-1] == "COMPLETED" and 1 <= states.count("REQUEUED") == len(runs) - 1 <= 5, runs
    log = "".join(f.read_text() for f in sorted(job_folders(tmp_path)[job].glob("*_log.*")))  # .err and .out

    def events(what: str) -> set[str]:  # submitit's log lines "submitit LEVEL (time) - what" (in both logs)
        return set(re.findall(rf"^submitit \w+ \(([^)]+)\) - {what}", log, re.M))

    assert len(events("Caught signal SIGUSR2")) == states.count("REQUEUED")  # SLURM's time-limit signal, each run
    assert len(events(f"Requeued job {job} ")) == states.count("REQUEUED")  # ... and submitit's requeue
    assert len(events("Job completed successfully")) == 1
    assert "DUE TO TIME LIMIT" not in log  # never killed at the limit
    print(f"\ntime-limit job: {len(runs)} runs: {[(r['State'], r['Start'][-8:], r['End'][-8:]) for r in runs]}")


def test_a_job_out_of_requeues_is_reported_with_its_log_and_keeps_its_records(tmp_path, slurm):
    """max_num_timeout=0: at the time-limit signal submitit gives up instead of requeueing; the
    sweep says so (not hung, not "interrupted") and the problems finished so far stay on disk for
    a relaunch to resume."""
    p = sweep(tmp_path, slurm, "slurm_out_of_time", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",
              "hydra.launcher.max_num_timeout=0", "+backend.delay=2.5", "run.concurrency=1", "task.limit=28",
              "strategy.n=1", timeout=300)
    assert p.returncode == 1
    [job] = job_folders(tmp_path)
    [line] = [x for x in p.stderr.splitlines() if x.startswith("ttscale: job #")]
    assert line.startswith(f"ttscale: job #0 ({job}) failed: ") and "timed-out too many times" in line, line
    assert line.endswith(f"log: {job_folders(tmp_path)[job] / f'{job}_0_log.err'} (and .out)")
    [d] = run_dirs_under(tmp_path, "slurm_out_of_time")
    ids = [r["problem_id"] for r in iter_records(d)]
    assert 0 < len(ids) < 28 and len(set(ids)) == len(ids)
    assert [r["State"] for r in sacct(slurm, job, duplicates=True, rows=1)] == ["FAILED"]


def test_crashing_jobs_are_reported_with_their_log_paths(tmp_path, slurm):
    """Three jobs: one runs, one raises (tests/sweep_conf/backend/crash.yaml), one dies without a
    word (die.yaml: os._exit(3); submitit learns it from sacct). The sweep waits for all three and
    names each failed one with its log."""
    p = sweep(tmp_path, slurm, "slurm_crash", "backend=fake,crash,die", "task.limit=2")
    assert p.returncode != 0
    out = p.stdout + p.stderr
    folders = job_folders(tmp_path)
    reports = {m.group(1): m for m in re.finditer(r"^ttscale: job #(\d) \((\S+)\) failed: (.*); overrides: (.*); "
                                                  r"log: (\S+) \(and \.out\)$", out, re.M)}
    assert sorted(reports) == ["1", "2"], out[-3000:]
    for num, m in reports.items():
        job, _error, overrides, log = m.groups()[1:]
        assert f"backend={['crash', 'die'][int(num) - 1]}" in overrides
        assert Path(log) == folders[job] / f"{job}_0_log.err" and Path(log).exists()
    crash_log = Path(reports["1"].group(5)).read_text()
    assert CRASH_MARK in reports["1"].group(3) and CRASH_MARK in crash_log  # this checkout's code ran
    assert "state: FAILED" in reports["2"].group(3) and "exit code 3" in Path(reports["2"].group(5)).read_text()
    [d] = [p for p in run_dirs_under(tmp_path, "slurm_crash") if (p / "metrics.json").exists()]  # the first finished; a job killed while its engine started keeps only engine.log
    assert metrics(d)["problems"] == 2
    [a] = {j.split("_")[0] for j in folders}
    states = {r["JobID"]: r["State"] for r in sacct(slurm, a, rows=3)}
    assert states == {f"{a}_0": "COMPLETED", f"{a}_1": "FAILED", f"{a}_2": "FAILED"}


def test_a_rejected_configuration_fails_the_sweep_with_status_2(tmp_path, slurm):
    """Bad input in one job of the array: its one-line error reaches the sweep, which still runs
    the other configuration and exits 2, as with the basic launcher."""
    p = sweep(tmp_path, slurm, "slurm_rejected", "task.limit=2,-1")
    assert p.returncode == 2, (p.stdout + p.stderr)[-3000:]
    [line] = [x for x in p.stderr.splitlines() if x.startswith("ttscale: job #")]
    assert re.match(r"ttscale: job #1 \(\d+_1\) rejected: ConfigError: task: .*task.limit must be >= 0", line), line
    assert "configuration(s) of the sweep were rejected" in p.stderr
    [d] = run_dirs_under(tmp_path, "slurm_rejected")
    assert metrics(d)["problems"] == 2


def test_the_gpu_launcher_defaults_are_rejected_by_a_cpu_node(tmp_path, slurm):
    """hydra/launcher=slurm asks for a GPU (and 8 CPUs, 64 GB): sbatch refuses it on this node,
    which hydra/launcher=slurm_cpu (the other tests) fixes in one key."""
    p = sweep(tmp_path, slurm, "slurm_gpu", "hydra/launcher=slurm", "task.limit=1", timeout=120)
    assert p.returncode != 0
    # the GPU request is what sbatch checks first
    assert "sbatch: error: Invalid generic resource (gres) specification" in p.stderr, p.stderr[-3000:]
    [script] = tmp_path.glob(".hydra/multirun/*/*/.submitit/.submission_file_*.sh")  # what sbatch refused
    text = script.read_text()
    for want in ("--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=240", "--signal=USR2@120",
                 "--job-name=ttscale-slurm_gpu", "export PYTHONUNBUFFERED=1"):
        assert want in text, (want, text)
    assert not run_dirs_under(tmp_path, "slurm_gpu")
