"""Bad data: malformed JSONL lines, non-UTF-8 bytes, rows without problem text, answer or
id, duplicate ids. By default one clear error naming file and line; with
`task.on_bad_row=skip` the bad rows are skipped and counted (metrics.json
`run/skipped_rows`, the console summary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ttscale.backends.fake import FakeEngine
from ttscale.tasks.math_tasks import MathTask
from ttscale.tasks.rows import read_jsonl
from tests.conftest import shared_dataset
from ttscale.runner import ConfigError, run

ROOT = Path(__file__).resolve().parents[1]


def good(i: int) -> dict:
    return {"qid": f"p{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)}


def write(path: Path, lines: list) -> Path:
    """Each item: a dict (a JSON line), a str (written as is) or bytes (raw)."""
    out = b""
    for x in lines:
        if isinstance(x, dict):
            out += json.dumps(x).encode() + b"\n"
        elif isinstance(x, str):
            out += x.encode() + b"\n"
        else:
            out += x + b"\n"
    path.write_bytes(out)
    return path


def task(path: Path, **kw) -> MathTask:
    return MathTask(name="mine", path=str(path), id_field="qid", **kw)


BAD_LINES = {
    "malformed": ('{"qid": "p9", "problem": "x", "answer": "1"', "malformed JSON"),
    "utf8": (b'{"qid": "p9", "problem": "caf\xe9", "answer": "1"}', "not valid UTF-8 (byte 0xe9"),
    "not-object": ('["p9", "x", "1"]', "expected a JSON object, got list"),
    "no-answer": ({"qid": "p9", "problem": "x"}, "no answer in field 'answer'"),
    "empty-answer": ({"qid": "p9", "problem": "x", "answer": ""}, "no answer in field 'answer'"),
    "null-answer": ({"qid": "p9", "problem": "x", "answer": None}, "no answer in field 'answer'"),
    "no-problem": ({"qid": "p9", "problem": "  ", "answer": "1"}, "no problem text in field 'problem'"),
    "no-id": ({"problem": "x", "answer": "1"}, "no id in field 'qid'"),
    "duplicate-id": ({"qid": "p0", "problem": "again", "answer": "1"}, "duplicate id: same id 'mine-p0' as"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_bad_row_is_an_error_naming_file_and_line(tmp_path, kind):
    bad, needle = BAD_LINES[kind]
    path = write(tmp_path / "data.jsonl", [good(0), good(1), "", good(2), bad, good(3)])  # bad on line 5
    with pytest.raises(ValueError) as e:
        task(path).load()
    msg = str(e.value)
    assert f"{path}:5: " in msg and needle in msg, msg
    assert "task.on_bad_row=skip" in msg and "\n" not in msg
    if kind == "duplicate-id":
        assert f"as {path}:1 " in msg  # where the id was first seen


def test_skip_mode_skips_every_bad_row_and_keeps_the_rest(tmp_path):
    lines = [good(0)]
    for k, (bad, _) in enumerate(BAD_LINES.values(), 1):
        lines += [bad, good(k)]  # bad rows on lines 2, 4, 6, ...
    path = write(tmp_path / "data.jsonl", lines)
    t = task(path, on_bad_row="skip")
    items = t.load()
    assert [p.id for p, _ in items] == [f"mine-p{k}" for k in range(len(BAD_LINES) + 1)]
    assert len(t.skipped_rows) == len(BAD_LINES)
    for (_, needle), (lineno, msg) in zip(BAD_LINES.values(), zip(range(2, len(lines), 2), t.skipped_rows)):
        assert msg.startswith(f"{path}:{lineno}: ") and needle in msg, msg


def test_row_numbered_ids_do_not_move_when_a_row_is_skipped(tmp_path):
    rows = [{"problem": f"q{i}", "answer": str(i)} for i in range(4)]
    path = write(tmp_path / "data.jsonl", [rows[0], "{not json", rows[2], rows[3]])
    items = MathTask(name="m", path=str(path), on_bad_row="skip").load()
    assert [p.id for p, _ in items] == ["m-0", "m-2", "m-3"]  # as in the repaired file


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = write(tmp_path / "data.jsonl", ["{", b"\xff\xfe"])
    with pytest.raises(ValueError, match="has no rows .*2 bad row"):
        task(path, on_bad_row="skip").load()


def test_on_bad_row_must_be_error_or_skip(tmp_path):
    with pytest.raises(ValueError, match=r"task\.on_bad_row must be one of \('error', 'skip'\)"):
        task(tmp_path / "x.jsonl", on_bad_row="ignore")


def test_bom_crlf_blank_lines_and_a_missing_final_newline_are_fine(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(good(0)).encode() + b"\r\n\r\n" + json.dumps(good(1)).encode())
    assert [p.id for p, _ in task(path).load()] == ["mine-p0", "mine-p1"]


def test_a_broken_json_file_read_by_datasets_is_one_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"problem": "x", "answer": 1}, {"problem": ')
    with pytest.raises(ValueError) as e:
        MathTask(name="m", path=str(path)).load()
    assert f"task.path={path}: cannot read it as json" in str(e.value) and "\n" not in str(e.value)


def test_line_reader_matches_datasets_on_the_shared_math500():
    import datasets

    path = shared_dataset("math500.jsonl")
    mine = read_jsonl(path, task="math500")
    theirs = datasets.load_dataset("json", data_files=str(path), split="train").to_list()
    assert mine == theirs and len(mine) == 500
    assert mine.where(499) == f"{path}:500"


# ------------------------------------------------------------------ through the runner
def cfg_for(tmp_path: Path, path: Path, *extra: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["task=math500", f"task.path={path}", "task.id_field=qid",
                                            "task.meta_fields=[]", "strategy.n=2", "logger=none",
                                            f"run.root={tmp_path / 'out'}", "run.progress=false", *extra])


def test_skipped_rows_are_counted_in_metrics_and_summary(tmp_path, capsys):
    path = write(tmp_path / "data.jsonl", [good(0), "{oops", good(1), {"qid": "p0", "problem": "x", "answer": "2"},
                                           good(2)])
    m = run(cfg_for(tmp_path, path, "task.on_bad_row=skip"), engine=FakeEngine(completions=[("\\boxed{1}", 1.0)]))
    assert m["problems"] == 3 and m["run/skipped_rows"] == 2
    (d,) = (tmp_path / "out" / "default").iterdir()
    assert json.loads((d / "metrics.json").read_text())["run/skipped_rows"] == 2
    assert "bad data rows skipped 2" in capsys.readouterr().out


def test_a_bad_row_stops_the_run_before_any_compute(tmp_path):
    path = write(tmp_path / "data.jsonl", [good(0), good(1), '{"qid": "p2", "problem": "x", "answer": }'])
    eng = FakeEngine()
    with pytest.raises(ConfigError, match=rf"{path}:3: malformed JSON"):
        run(cfg_for(tmp_path, path), engine=eng)
    assert eng.requests == [] and not (tmp_path / "out" / "default").exists()


def test_cli_bad_row_is_one_line_exit_2_and_no_run_directory(tmp_path):
    path = write(tmp_path / "data.jsonl", [good(0), b'{"qid": "p1", "problem": "\xff", "answer": "1"}'])
    root = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "task=math500", f"task.path={path}", "task.id_field=qid",
         "task.meta_fields=[]", f"run.root={root}", "logger=none"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120,
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert f"{path}:2: not valid UTF-8" in lines[0] and "task.on_bad_row=skip" in lines[0]
    assert not root.exists() or list(root.iterdir()) == []
