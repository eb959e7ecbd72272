"""hydra-submitit-launcher's SLURM and local launchers (conf/hydra/launcher/), reporting failed jobs.

Hydra takes a launcher class only from the `hydra_plugins` namespace package, hence this home.

The plugin's `launch` returns `[job.results()[0] for job in jobs]`: the first job that died stops the
sweep there (the later jobs are never waited for), and a job whose run raised ends as a job that
succeeded (SLURM: COMPLETED, nothing in its log) returning Hydra's error -- and neither says where the
job's log is. Here a run that raises fails its job (the trace in its log), every job of the sweep is
waited for, and each failed (or rejected) one gets a line on stderr with its error, overrides and log files:

    ttscale: job #1 (12_1) failed: InstantiationException: ...; overrides: ...; log: <sweep>/.submitit/12_1/12_1_0_log.err (and .out)

then Hydra raises the first failure as before (the sweep exits non-zero). `launch` is the plugin's
(hydra-submitit-launcher 1.2, MIT), with only its last line changed."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def _summary(e: BaseException) -> str:
    """One line for an error: a job's own exception, or the last exception of the trace submitit
    sends back (with the rest of its message)."""
    from submitit.core.utils import FailedJobError

    blocks = re.split(r"\n-{10,}\n", str(e))
    if isinstance(e, FailedJobError) and len(blocks) >= 2:
        lines = blocks[1].splitlines()
        starts = [i for i, x in enumerate(lines) if _EXC_LINE.match(x)]
        if starts:
            return " ".join(" ".join(lines[starts[-1]:]).split())[:400]
    head = re.split(r"\n(?:Error stream produced|No error stream produced|No output/error stream)", blocks[0])[0]
    return f"{type(e).__name__}: {' '.join(head.split())[:400]}"


def _rejected(e: BaseException) -> bool:
    from ttscale.runner.errors import ConfigError

    return isinstance(e, ConfigError)


def collect(jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Every job's JobReturn (a job that died becomes a FAILED one); one stderr line per failure.

    A configuration the job rejected (ttscale's ConfigError: bad input) is handed to the sweep's
    `SweepFailures` as the basic launcher's are: the other jobs count, the sweep exits 2 at the end."""
    from ttscale.runner import cli

    returns = []
    for i, (job, overrides) in enumerate(zip(jobs, job_overrides)):
        try:
            ret = job.results()[0]
        except Exception as e:  # noqa: BLE001 - the job died (no JobReturn): killed, out of time, ...
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=e)
        if ret.status == JobStatus.FAILED:
            err = Path(job.paths.stderr)
            logs = f"{err} (and .out)" if err.suffix == ".err" else str(err)
            what = "rejected" if _rejected(ret._return_value) else "failed"
            print(f"ttscale: job #{initial_job_idx + i} ({job.job_id}) {what}: {_summary(ret._return_value)}; "
                  f"overrides: {' '.join(filter_overrides(overrides))}; log: {logs}", file=sys.stderr, flush=True)
            if what == "rejected":
                cli.reject(str(ret._return_value))
                ret = JobReturn(overrides=ret.overrides, cfg=ret.cfg, hydra_cfg=ret.hydra_cfg, status=JobStatus.COMPLETED,
                                working_dir=ret.working_dir, task_name=ret.task_name, _return_value=None)
        returns.append(ret)
    return returns


class _Reporting(plugin.BaseSubmititLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """In the job: a run that raised fails the job (its trace in the job's log, the job FAILED for
        SLURM) instead of coming back as a finished job carrying an exception. (A configuration
        rejected as bad input still comes back: its one-line error is in the job's log already.)"""
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED and not _rejected(ret._return_value):
            raise ret._return_value
        return ret  # a rejected configuration comes back as such (see `collect`)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        params = self.params
        init_params = {"folder": self.params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout"}
        init_params.update(**{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys})
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {x if x in baseparams else f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x not in init_keys}
        executor.update_parameters(**params)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        return collect(jobs, job_overrides, initial_job_idx)


class SlurmLauncher(_Reporting, plugin.SlurmLauncher):
    pass


class LocalLauncher(_Reporting, plugin.LocalLauncher):
    pass
