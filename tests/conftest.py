"""Shared fixtures: the offline datasets beside the project, and one real vLLM
CPU engine per test session (starting it costs ~30-45 s; every integration test
shares it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("TTSCALE_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared_dataset(name: str) -> Path:
    """Path of a file in ../shared/datasets. Missing: skip locally, *fail* in CI."""
    p = SHARED_DATASETS / name
    if not p.exists():
        msg = f"shared dataset {p} is missing"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def real_engine():
    """The one real vLLM CPU engine (embedded SmolLM2) shared by the whole session.

    It runs on its own event-loop thread, so tests may call it from any loop
    (each `asyncio.run`)."""
    from ttscale.backends.vllm_engine import test_engine

    engine = test_engine()
    yield engine
    engine.shutdown()
