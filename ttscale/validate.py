"""Check a run's config before any compute is spent: one clear line per mistake.

Two places call this module:

* `scripts/run.py`, before Hydra runs anything: `check_group_choices(argv)` looks
  at each command-line choice of a config group (`strategy=nope`, `+experiment=x`,
  sweeps `strategy=a,b` included) and, for a name with no `conf/<group>/<name>.yaml`,
  prints one line listing the valid names and exits with status 2;
  `check_override_keys(argv)` does the same for a key that is not in the config
  (`strategy.nn=3`: one line with the keys there are).
* `ttscale.runner.prepare`, first thing: `validate_config(cfg)` checks the resolved
  values and raises `ConfigError` (the CLI prints it as one line, exit status 2). The
  run directory is created only after this, and only once the engine is up, so a
  rejected config leaves nothing behind.

What `validate_config` checks (each message names the config key to change):

* sampling: `temperature >= 0`, `top_p` in (0, 1], `max_tokens >= 1`, for
  `sampling.*` and for a strategy's own value when it is not the `${sampling.*}` one;
* counts: `strategy.n`, `M`, `k`, `beam_width`, `max_expansions`, `chunk_tokens`,
  `strategy.step.max_*` are integers >= 1; `strategy.step.delimiter` is not empty;
* budget: `budget.max_tokens` / `budget.max_verifier_calls` are >= 1 or null, and the
  token budget pays for at least **one step of one sequence** (the rule below);
* run: `run.concurrency >= 1`, `run.retry.*` sane;
* data: `task.path`, when set, is an existing file (a Hub dataset is checked when the
  task loads, next: unreachable offline, its error suggests `task.path=`);
* model: the policy model (`model.path` / `backend.model`) is a known `embedded:`
  model whose package is installed, a local directory with `config.json` and weights,
  or a Hub id, which with `HF_HUB_OFFLINE=1` must already be in the local cache; a
  verifier's model (`verifier.model`, loaded lazily mid-run) is checked the same way.

The budget rule. The smallest unit of work a strategy sends is one step of one
sequence: `strategy.step.max_step_tokens` for step-level search (beam, DVTS, particle
filtering, A*), `strategy.chunk_tokens` for entropy branching, and the whole sample,
`strategy.max_tokens`, for parallel sampling (best-of-N, voting). A `budget.max_tokens`
below that unit is rejected: even a single sequence would be cut before its first step
ends, so every strategy would return nothing worth measuring. A budget above the unit
but below what the first request asks for in full (n sequences x unit) is allowed: the
ledger splits it evenly among the sequences (each is cut shorter), which is how a fixed
budget compares strategies at matched compute; a warning says so.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from ttscale.runner import ConfigError

log = logging.getLogger("ttscale")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Strategy keys that count something (samples, beams, expansions): integers >= 1.
COUNT_KEYS = ("n", "M", "k", "beam_width", "max_expansions", "chunk_tokens")
STEP_COUNT_KEYS = ("max_steps", "max_step_tokens", "max_total_tokens")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ---------------------------------------------------------------- command line
def group_options(group: str, conf_dirs: Sequence[Path]) -> list[str]:
    """Names of the options of config group `group` (`conf/<group>/*.yaml`, nested ones as `sub/name`)."""
    names: set[str] = set()
    for d in conf_dirs:
        gdir = d / group
        if gdir.is_dir():
            names |= {str(p.relative_to(gdir).with_suffix("")) for p in gdir.rglob("*.yaml")}
    return sorted(names)


def _overrides(argv: Sequence[str]) -> list[Any]:
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, extra = get_args_parser().parse_known_args(list(argv))
    raw = list(args.overrides or []) + [a for a in extra if not a.startswith("-")]
    return OverridesParser.create().parse_overrides(raw)


def _search_dirs(overrides: Iterable[Any], conf_dir: Path) -> list[Path] | None:
    """conf/ plus `hydra.searchpath=[file://...]` entries; None when a pkg:// entry makes it unknowable."""
    dirs = [conf_dir]
    for o in overrides:
        if o.key_or_group != "hydra.searchpath" or o.is_delete():
            continue
        for entry in o.value() or []:
            entry = str(entry)
            if entry.startswith("file://"):
                dirs.append(Path(entry[len("file://"):]))
            elif "://" in entry:
                return None
            else:
                dirs.append(Path(entry))
    return dirs


def check_group_choices(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The one-line error for the first command-line choice of a config group that does
    not exist, or None. Hydra's own groups (`hydra/...`) are left to Hydra."""
    try:
        overrides = _overrides(argv)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it itself
        return None
    dirs = _search_dirs(overrides, conf_dir)
    if dirs is None:
        return None
    from hydra.core.override_parser.types import ValueType

    for o in overrides:
        group = o.key_or_group
        if o.is_delete() or group.startswith("hydra") or "." in group:
            continue
        if not any((d / group).is_dir() for d in dirs):
            continue  # a plain key (seed=1), not a group
        if o.is_sweep_override():
            if o.value_type not in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
                continue  # glob / range sweeps: Hydra expands and checks them
            values = [str(v) for v in o.sweep_string_iterator()]
        else:
            v = o.value()
            if v is None:
                continue
            values = [str(v)]
        options = group_options(group, dirs)
        for v in values:
            if v not in options:
                hint = "; a Hub id or local checkpoint goes to model.path=<id or path>" if group == "model" else ""
                return (f"{o.input_line}: no {group} named {v!r} (no conf/{group}/{v}.yaml); "
                        f"choose one of: {', '.join(options)}{hint}")
    return None


def check_override_keys(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The one-line error for the first `key=value` override whose key is not in the
    composed config (a typo: `strategy.nn=3`), or None. `+key=` / `++key=` add keys and
    are not checked; anything unusual (other config names, glob sweeps) is left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.types import OverrideType

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
        if args.config_name or args.config_path or args.config_dir:
            return None
        overrides = _overrides(argv)
    except Exception:  # noqa: BLE001
        return None
    dirs = _search_dirs(overrides, conf_dir)
    if dirs is None:
        return None
    compose_with: list[str] = []
    checks = []
    for o in overrides:
        key = o.key_or_group
        is_group = "." not in key and not key.startswith("hydra") and any((d / key).is_dir() for d in dirs)
        if key.startswith("hydra"):
            if key == "hydra.searchpath":
                compose_with.append(o.input_line)
            continue
        if is_group or o.type != OverrideType.CHANGE:
            if o.is_sweep_override():  # a sweep over groups: Hydra's sweep setup composes the
                return None  # shared overrides its own way and reports its own errors
            compose_with.append(o.input_line)
            continue
        checks.append(o)
    if not checks:
        return None
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=compose_with)
    except Exception:  # noqa: BLE001 - Hydra reports its own composition errors
        return None
    for o in checks:
        parts = o.key_or_group.split(".")
        node: Any = cfg
        for i, seg in enumerate(parts):
            if not isinstance(node, DictConfig):
                break
            where = ".".join(parts[:i]) or "the config"
            if seg not in node:
                keys = ", ".join(sorted(str(k) for k in node.keys()))
                return (f"{o.input_line}: no key {seg!r} in {where} (its keys: {keys}); "
                        f"to add a new key write +{o.key_or_group}=...")
            child = node._get_node(seg)
            if i + 1 < len(parts) and child is not None and child._is_none():
                group = parts[0] if any((d / parts[0]).is_dir() for d in dirs) else None
                hint = f"; choose one first ({group}=<name>)" if group else ""
                return f"{o.input_line}: {'.'.join(parts[: i + 1])} is null{hint}"
            node = node[seg] if isinstance(child, DictConfig) else None
    return None


def precheck_argv(argv: Sequence[str] | None = None) -> None:
    """For scripts/run.py: exit with status 2 and one line on an unknown group choice or key."""
    argv = sys.argv[1:] if argv is None else argv
    msg = check_group_choices(argv) or check_override_keys(argv)
    if msg is not None:
        print(f"ttscale: error: {msg}", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- resolved config
def _source_key(cfg: DictConfig, key: str) -> str:
    """The key the user sets for `key`: follows a plain `${other.key}` interpolation."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf):
        raw = node._get_node(leaf)._value()  # type: ignore[union-attr]
        m = re.fullmatch(r"\$\{([\w.]+)\}", str(raw))
        if m:
            return _source_key(cfg, m.group(1))
    return key


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception as e:  # noqa: BLE001 - a broken interpolation
        raise ConfigError(f"{key}: {e}") from e


def _number(cfg: DictConfig, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{_source_key(cfg, key)} must be a number, got {value!r}")
    return float(value)


def _count(cfg: DictConfig, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{_source_key(cfg, key)} must be an integer >= 1, got {value!r}")
    return value


def _check_sampling(cfg: DictConfig) -> None:
    for node in ("sampling", "strategy"):
        for leaf in ("temperature", "top_p", "max_tokens"):
            key = f"{node}.{leaf}"
            if node == "strategy" and _source_key(cfg, key) != key:
                continue  # `${sampling.x}`: checked as sampling.x
            value = _get(cfg, key)
            if value is None:
                continue
            if leaf == "max_tokens":
                _count(cfg, key, value)
                continue
            x = _number(cfg, key, value)
            if leaf == "temperature" and x < 0:
                raise ConfigError(f"{key} must be >= 0 (0 = greedy), got {value}")
            if leaf == "top_p" and not 0 < x <= 1:
                raise ConfigError(f"{key} must be in (0, 1], got {value}")


def _check_strategy(cfg: DictConfig) -> None:
    s = cfg.get("strategy")
    if not isinstance(s, DictConfig):
        return
    for leaf in COUNT_KEYS:
        if leaf in s and _get(cfg, f"strategy.{leaf}") is not None:
            _count(cfg, f"strategy.{leaf}", _get(cfg, f"strategy.{leaf}"))
    step = s.get("step")
    if isinstance(step, DictConfig):
        if "delimiter" in step:
            d = _get(cfg, "strategy.step.delimiter")
            if not isinstance(d, str) or d == "":
                raise ConfigError(f"strategy.step.delimiter must be a non-empty string (e.g. '\\n\\n'), got {d!r}")
        for leaf in STEP_COUNT_KEYS:
            if leaf in step and _get(cfg, f"strategy.step.{leaf}") is not None:
                _count(cfg, f"strategy.step.{leaf}", _get(cfg, f"strategy.step.{leaf}"))


def step_unit(cfg: DictConfig) -> tuple[int, str] | None:
    """(tokens of one step of one sequence, the key it comes from), see the module doc."""
    s = cfg.get("strategy")
    if not isinstance(s, DictConfig):
        return None
    for key in ("strategy.step.max_step_tokens", "strategy.chunk_tokens", "strategy.max_tokens"):
        v = _get(cfg, key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v, _source_key(cfg, key)
    return None


def first_request_sequences(cfg: DictConfig) -> int:
    """Sequences in the strategy's first request: `k` for A*, 1 for entropy branching, else `n`."""
    s = cfg.get("strategy")
    if not isinstance(s, DictConfig):
        return 1
    if "chunk_tokens" in s:  # entropy branching starts from one sequence
        return 1
    for leaf in ("n", "k"):  # A* has no n: its first expansion samples k
        v = s.get(leaf)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            return v
    return 1


def _check_budget(cfg: DictConfig) -> None:
    b = cfg.get("budget")
    if not isinstance(b, DictConfig):
        return
    for leaf in ("max_tokens", "max_verifier_calls"):
        v = _get(cfg, f"budget.{leaf}")
        if v is not None:
            _count(cfg, f"budget.{leaf}", v)
    budget = _get(cfg, "budget.max_tokens")
    unit = step_unit(cfg)
    if budget is None or unit is None:
        return
    tokens, key = unit
    if budget < tokens:
        raise ConfigError(
            f"budget.max_tokens={budget} is smaller than one step of one sequence ({key}={tokens}): "
            f"raise budget.max_tokens to at least {tokens} or lower {key}"
        )
    seqs = first_request_sequences(cfg)
    if budget < seqs * tokens:
        log.warning("budget.max_tokens=%d is less than the first request's %d sequences x %s=%d: "
                    "each sequence is cut to about %d tokens", budget, seqs, key, tokens, budget // seqs)


def _check_run(cfg: DictConfig) -> None:
    r = cfg.get("run")
    if not isinstance(r, DictConfig):
        return
    if r.get("concurrency") is not None:
        _count(cfg, "run.concurrency", _get(cfg, "run.concurrency"))
    retry = r.get("retry")
    if isinstance(retry, DictConfig):
        if retry.get("attempts") is not None:
            _count(cfg, "run.retry.attempts", retry.get("attempts"))
        t = retry.get("timeout_s")
        if t is not None and _number(cfg, "run.retry.timeout_s", t) <= 0:
            raise ConfigError(f"run.retry.timeout_s must be > 0 or null, got {t}")
        b = retry.get("backoff_s")
        if b is not None and _number(cfg, "run.retry.backoff_s", b) < 0:
            raise ConfigError(f"run.retry.backoff_s must be >= 0, got {b}")


def _check_task(cfg: DictConfig) -> None:
    t = cfg.get("task")
    if not isinstance(t, DictConfig) or "path" not in t:
        return
    path = _get(cfg, "task.path")
    if path in (None, ""):
        return
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError(f"task.path={path}: no such file (resolved to {p.resolve()})")
    if p.is_dir():
        raise ConfigError(f"task.path={path} is a directory; give a .jsonl/.json/.parquet/.csv file")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_model(value: Any, key: str) -> None:
    """A model reference the engine can load without a download it cannot make. Raises ConfigError."""
    from backends.embedded import EMBEDDED_MODELS, PREFIX, WEIGHT_PATTERNS, gguf_path, is_prepared, model_dir

    if value in (None, ""):
        raise ConfigError(f"{key} must be set (a Hub id, a local checkpoint directory, or embedded:<name>)")
    v = str(value)
    if v.startswith(PREFIX):
        name = v[len(PREFIX):]
        if name not in EMBEDDED_MODELS:
            known = ", ".join(PREFIX + k for k in EMBEDDED_MODELS)
            raise ConfigError(f"{key}={v}: no such embedded model; known: {known}")
        if not is_prepared(model_dir(name)):
            try:
                gguf_path(EMBEDDED_MODELS[name])
            except FileNotFoundError as e:
                raise ConfigError(f"{key}={v}: {e}") from e
        return
    p = Path(v).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ConfigError(f"{key}={v} is a file; give a checkpoint directory (config.json + weights) or a .gguf")
        return
    if p.is_dir() or v.startswith((".", "/", "~")) or v.count("/") > 1 or not HUB_ID.match(v):
        if not p.is_dir():
            raise ConfigError(f"{key}={v}: no such model directory (resolved to {p.resolve()})")
        if not (p / "config.json").is_file():
            raise ConfigError(f"{key}={v}: no config.json in {p.resolve()} (not a Hugging Face checkpoint)")
        if not any(next(p.glob(w), None) is not None for w in WEIGHT_PATTERNS):
            raise ConfigError(f"{key}={v}: no weights ({', '.join(WEIGHT_PATTERNS)}) in {p.resolve()}")
        return
    if offline():  # a Hub id: it has to be in the local cache already
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(v, "config.json")
        except Exception:  # noqa: BLE001
            cached = None
        if not isinstance(cached, str):
            raise ConfigError(
                f"{key}={v}: not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE): "
                f"download it first (`huggingface-cli download {v}`) or set {key}=<local checkpoint directory>"
            )


def _check_models(cfg: DictConfig) -> None:
    backend = cfg.get("backend")
    if isinstance(backend, DictConfig) and "model" in backend and "base_url" not in backend:
        # a server backend (base_url) names a served model, not something to load
        check_model(_get(cfg, "backend.model"), _source_key(cfg, "backend.model"))
    verifier = cfg.get("verifier")
    if isinstance(verifier, DictConfig) and isinstance(verifier.get("model"), str):
        # a reward model loads lazily, mid-run: check it now like the policy model
        check_model(_get(cfg, "verifier.model"), _source_key(cfg, "verifier.model"))


CHECKS = (_check_sampling, _check_strategy, _check_budget, _check_run, _check_task, _check_models)


def validate_config(cfg: DictConfig) -> None:
    """Every check above, in order; the first failure raises `ConfigError` (one line)."""
    for check in CHECKS:
        check(cfg)


def _interval(r: Sequence[float]) -> str:
    lo, hi = float(r[0]), float(r[1])
    return f"{'(' if lo == -math.inf else '['}{lo:g}, {hi:g}{')' if hi == math.inf else ']'}"


def check_score_range(strategy: Any, verifier: Any) -> None:
    """A strategy guided by verifier scores it cannot read is rejected, not run: each
    `strategy.score_needs` entry that applies ("" always, "setting=value" when the built
    strategy has that value) must contain the built verifier's `score_range` (undeclared:
    unbounded). E.g. particle filtering's logit weighting clips every negative mean
    log-probability to the same weight, so the resampling would be uniform."""
    if strategy is None or verifier is None:
        return
    have = tuple(getattr(verifier, "score_range", (-math.inf, math.inf)))
    for setting, (low, high, why) in (getattr(strategy, "score_needs", None) or {}).items():
        attr, _, value = setting.partition("=")
        if attr and str(getattr(strategy, attr, None)) != value:
            continue
        if have[0] < low or have[1] > high:
            sname = getattr(strategy, "name", type(strategy).__name__)
            vname = getattr(verifier, "name", type(verifier).__name__)
            where = f"strategy.{setting}" if attr else f"strategy {sname}"
            raise ConfigError(
                f"{where} needs verifier scores in {_interval((low, high))}, but verifier {vname} scores in "
                f"{_interval(have)} (its score_range): {why}; choose a verifier whose scores fit"
                + (f" ({getattr(verifier, 'bounded_override')})" if getattr(verifier, "bounded_override", None) else "")
                + (f" or another strategy.{attr}" if attr else "")
            )


def remove_hydra_output_dir() -> None:
    """After a rejected config: remove the job folder Hydra made for this run (its saved
    config and empty log), so a bad config leaves nothing behind. Only in a single run,
    only a folder that holds nothing but Hydra's own files, and its parents while empty
    up to `<run.root>/.hydra`."""
    import shutil

    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
            return
        out = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001
        return
    if not out.is_dir() or ".hydra" not in out.parts:
        return
    names = {p.name for p in out.iterdir()}
    if not names <= {".hydra", "run.log", f"{HydraConfig.get().job.name}.log"}:
        return
    if any(p.stat().st_size for p in out.glob("*.log")):
        return  # something was logged: keep it
    logging.shutdown()  # Hydra's file handler holds run.log open
    shutil.rmtree(out, ignore_errors=True)
    parent = out.parent
    while parent.name and not any(parent.iterdir()):
        parent.rmdir()
        if parent.name == ".hydra":
            break
        parent = parent.parent
