"""Replay a finished run's stored pools with another selection, generating nothing:

    python scripts/replay.py RUN_DIR strategy=majority_vote
    python scripts/replay.py RUN_DIR strategy=best_of_n verifier=self_certainty
    python scripts/replay.py RUN_DIR strategy=deepconf_offline strategy.eta=90
    python scripts/replay.py RUN_DIR strategy=adaptive_consistency strategy.conf_thresh=0.9

writes a new run directory (beside the source, named as any run; its config's
`replay.source` is the source run's hash) with records, metrics and, with a logger, a W&B
run. See `ttscale.runner.replay`. Bad input: one line, exit status 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttscale.runner.errors import ConfigError  # noqa: E402
from ttscale.runner.replay import replay  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-") or "=" in args[0]:
        print("usage: replay.py RUN_DIR strategy=<name> [verifier=<name>] [key=value ...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        out, metrics = replay(args[0], args[1:])
    except ConfigError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    print(f"replay of {args[0]} -> {out} (accuracy {metrics.get('accuracy')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
