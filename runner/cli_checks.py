"""Checks of the command line, before Hydra composes anything (`scripts/run.py`).

`check_group_choices(argv)` looks at each command-line choice of a config group
(`strategy=nope`, `+experiment=x`, sweeps `strategy=a,b` included) and, for a name with
no `conf/<group>/<name>.yaml`, returns one line listing the valid names;
`check_override_keys(argv)` does the same for a key that is not in the config
(`strategy.nn=3`: one line with the keys there are). `precheck_argv` prints the line
and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


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


def _raw_overrides(argv: Sequence[str]) -> list[str]:
    from hydra._internal.utils import get_args_parser

    args, extra = get_args_parser().parse_known_args(list(argv))
    return list(args.overrides or []) + [a for a in extra if not a.startswith("-")]


def check_syntax(argv: Sequence[str]) -> str | None:
    """The one-line error for the first override Hydra's grammar cannot parse (`strategy.n=[1,2`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        raws = _raw_overrides(argv)
    except SystemExit:  # argparse already printed its own usage error
        return None
    from hydra._internal.utils import get_args_parser

    multirun = bool(get_args_parser().parse_known_args(list(argv))[0].multirun)
    parser = OverridesParser.create()
    for raw in raws:
        try:
            [o] = parser.parse_overrides([raw])
            if o.is_sweep_override() and not multirun and not o.key_or_group.startswith("hydra"):
                return (f"{raw}: several values are a sweep, which needs -m (--multirun); "
                        f"for a list write {o.input_line.split('=', 1)[0]}=[...]")
        except OverrideParseException as e:
            why = " ".join(str(e).split("\n")[0].split())
            return (f"{raw}: not a valid override ({why}); lists and values with special characters need "
                    f"brackets closed and quotes, e.g. 'strategy.n=[1,2]' or 'key=\"a b\"'")
    return None


def _error_line(e: BaseException) -> str:
    """Hydra's multi-line composition error as one line (its option listing folded in)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    head, rest = lines[0], lines[1:]
    if rest and rest[0].startswith("Available options"):
        options = [ln for ln in rest[1:] if not ln.startswith(("Config search path", "provider="))]
        options = options[: next((i for i, ln in enumerate(options) if ln.endswith(":")), len(options))]
        return f"{head}; choose one of: {', '.join(options)}"
    return head


def check_composition(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The one-line error for a command line Hydra cannot compose (`hydra/launcher=nope`, an
    override of a key whose parent is not a dict, ...). A sweep is composed with the first value of
    each swept override; other config dirs/names are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.types import ValueType

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
        if args.config_name or args.config_path or args.config_dir:
            return None
        overrides = _overrides(argv)
    except Exception:  # noqa: BLE001 - syntax errors are check_syntax's
        return None
    first: list[str] = []
    for o in overrides:
        if o.is_sweep_override():
            if o.value_type not in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
                continue
            value = next(iter(o.sweep_string_iterator()), None)
            if value is None:
                continue
            first.append(f"{o.input_line.split('=', 1)[0]}={value}")
        else:
            first.append(o.input_line)
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            compose("config", overrides=first, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - any composition error: one line naming the override
        line = _error_line(e)
        named = next((o.input_line for o in overrides if o.key_or_group in line), None)
        return f"{named}: {line}" if named and named not in line else line
    return None


def precheck_argv(argv: Sequence[str] | None = None) -> None:
    """For scripts/run.py: exit with status 2 and one line on an override Hydra cannot parse,
    an unknown group choice or key, or a command line that does not compose."""
    argv = sys.argv[1:] if argv is None else argv
    msg = check_syntax(argv) or check_group_choices(argv) or check_override_keys(argv) or check_composition(argv)
    if msg is not None:
        print(f"ttscale: error: {msg}", file=sys.stderr)
        sys.exit(2)
