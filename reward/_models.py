"""Reward models: a sequence-classification model reads a conversation and a response and returns
one number, higher for a response people would prefer.

Any transformers ``AutoModelForSequenceClassification`` with one label works: a local directory,
a Hugging Face id already downloaded (the hub is never reached: ``HF_HUB_OFFLINE``), or a LoRA
adapter on such a base (what ``criticloop train --method reward`` makes). So does a reward model
served by vLLM (``vllm serve MODEL --runner pooling``): its ``/pooling`` API is sent each
conversation as chat messages and returns the score.

The input is the conversation plus the response through the model's chat template, the way
reward models are trained; a model without a template (an encoder such as MiniLM, used as a
cross-encoder) gets the conversation's text and the response as a text pair.

From raw score to 0-1: a Bradley-Terry reward model says P(A preferred over B) =
sigmoid(r_A - r_B). Given the reward ``center`` of a typical response (for a trained model, the
mean reward over its training responses, stored with it; 0 unless set for another model),
``sigmoid((raw - center) / scale)`` is the chance this response is preferred over a typical one.
The confidence is the margin, read the same way: ``|2 * sigmoid((raw - rival) / scale) - 1|``
against the closest rival (another answer to the same prompt scored in the same pass), so 0 when
the model cannot tell the candidates apart (the graph then asks a person) and near 1 when it
clearly prefers one; a response with no rival takes its margin over a typical response.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..agents import Case, Score
from ..errors import ConfigError, ModelError

Conversation = Sequence[Mapping[str, str]]
log = logging.getLogger(__name__)
RM_HEADS = ("ForSequenceClassification", "ForRewardModeling", "RewardModel")


@dataclass(frozen=True)
class RewardModelSpec:
    """Where a reward model is and how to read its score."""

    name: str
    model: str | None = None  # a local directory or a downloaded hub id (the base, with adapter)
    adapter: str | None = None  # a PEFT adapter directory on ``model``
    url: str | None = None  # a vLLM server's base URL: served, not loaded here
    served_model: str | None = None  # the name the server knows it by (default: ``model``)
    api_key_env: str | None = None  # the environment variable holding the server's key
    activation: str = "none"  # what the server applied to the score: none, or sigmoid (undone)
    center: float = 0.0
    scale: float = 1.0
    max_length: int = 1024
    batch_size: int = 8
    timeout: float = 60.0
    device: str = "auto"
    version: str = ""  # a registry version; empty: a hash of the spec

    @property
    def served(self) -> bool:
        return self.url is not None

    @property
    def label(self) -> str:
        """What critic records say judged: the registry version, else name and a spec hash."""
        if self.version:
            return self.version
        spec = {k: v for k, v in asdict(self).items() if k not in ("batch_size", "timeout")}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}"

    def to_unit(self, raw: float) -> float:
        """The raw score as P(preferred over a typical response)."""
        z = (raw - self.center) / (self.scale or 1.0)
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def check_local(spec: RewardModelSpec) -> None:
    """Fail now, in one line, on a model that is missing, is not a reward model, or does not
    give one score: reads configuration files only, loads no weights."""
    if spec.served:
        return
    where = f"reward model {spec.name!r}"
    base = spec.model
    if spec.adapter:
        adapter = Path(spec.adapter).expanduser()
        config = adapter / "adapter_config.json"
        if not config.is_file():
            raise ConfigError(f"{where}: {adapter}: not a PEFT adapter (no adapter_config.json)")
        if not base:
            base = json.loads(config.read_text()).get("base_model_name_or_path")
        task = json.loads(config.read_text()).get("task_type")
        if task not in (None, "SEQ_CLS"):
            raise ConfigError(
                f"{where}: {adapter} is a {task} adapter, not a reward model's (SEQ_CLS: a "
                "score head, as criticloop train --method reward saves)"
            )
    if not base:
        raise ConfigError(f"{where}: give `model` (a directory or hub id) or `url` (a server)")
    config = _auto_config(base, where)
    architectures = list(getattr(config, "architectures", None) or [])
    if spec.adapter:
        return  # the adapter brings the score head: its base may be a causal LM
    if architectures and not any(a.endswith(RM_HEADS) for a in architectures):
        raise ConfigError(
            f"{where}: {base} is a {architectures[0]}, not a reward model (no sequence-"
            "classification head); give a model saved as AutoModelForSequenceClassification "
            "with one label"
        )
    if architectures and getattr(config, "num_labels", 1) != 1:
        raise ConfigError(
            f"{where}: {base} has {config.num_labels} labels; a reward model gives one score "
            "(num_labels = 1)"
        )


def _auto_config(base: str, where: str) -> Any:
    from transformers import AutoConfig

    local = Path(base).expanduser()
    if not local.exists() and (base.startswith((".", "/", "~")) or base.count("/") != 1):
        raise ConfigError(f"{where}: {base}: no such directory")
    try:
        return AutoConfig.from_pretrained(str(local) if local.exists() else base)
    except (OSError, ValueError) as exc:
        if local.exists():
            raise ConfigError(f"{where}: {base}: not a transformers model ({_first(exc)})") from None
        raise ConfigError(
            f"{where}: {base}: not found locally (the hub is not reached: download it first, "
            "e.g. `hf download " + base + "`, or give its directory)"
        ) from None


def _first(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# ---- encoding: the same for scoring and training ----------------------------------------------


def encode(
    tokenizer: Any, conversation: Conversation, response: str, max_length: int
) -> list[int]:
    """Token ids of ``response`` to ``conversation`` as the reward model reads them.

    With a chat template: the whole conversation ending in the assistant's response; when too
    long, the oldest context goes first and the response keeps at least three quarters of the
    budget. Without one (an encoder): the conversation's text and the response as a text pair.
    """
    turns = [{"role": m["role"], "content": m["content"]} for m in conversation]
    limit = getattr(tokenizer, "model_max_length", None) or max_length
    max_length = min(max_length, limit) if limit < 1_000_000 else max_length
    if getattr(tokenizer, "chat_template", None):
        context = _ids(
            tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
        )
        full = _ids(
            tokenizer.apply_chat_template(
                [*turns, {"role": "assistant", "content": response}], tokenize=True
            )
        )
        if full[: len(context)] != context:  # a template that rewrites earlier turns
            context = []
        reply = full[len(context) :]
        if len(full) <= max_length:
            return full
        reply = reply[: max(max_length * 3 // 4, max_length - len(context))]
        return context[-(max_length - len(reply)) :] + reply if max_length > len(reply) else reply
    text = "\n".join(f"{m['role']}: {m['content']}" for m in turns)
    return list(
        tokenizer(text, response, truncation="longest_first", max_length=max_length)["input_ids"]
    )


def _ids(value: Any) -> list[int]:
    if isinstance(value, Mapping) or hasattr(value, "input_ids"):
        value = value["input_ids"]
    return list(value)


def load_sequence_classifier(spec: RewardModelSpec, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) of a local reward model, in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..agents import quiet_transformers

    quiet_transformers()
    check_local(spec)
    base = spec.model
    if spec.adapter and not base:
        config = json.loads((Path(spec.adapter) / "adapter_config.json").read_text())
        base = config["base_model_name_or_path"]
    where = f"reward model {spec.name!r}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.adapter or base)
    except (OSError, ValueError):
        tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, dtype=torch.float32
        )
        if spec.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.adapter)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{where}: cannot load {spec.adapter or base}: {_first(exc)}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return model, tokenizer


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded ids and mask (sequence classifiers find the last real token by the mask)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def score_batched(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[Conversation, str]],
    max_length: int,
    batch_size: int,
) -> list[float]:
    """Raw scores of (conversation, response) items from a model in memory: batches of similar
    length (little padding), in eval mode (a model being trained is put back in train mode)."""
    import torch

    rows = [encode(tokenizer, conv, text, max_length) for conv, text in items]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0.0] * len(rows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), max(1, batch_size)):
                chunk = order[start : start + max(1, batch_size)]
                ids, mask = pad_batch([rows[i] for i in chunk], tokenizer.pad_token_id)
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                for i, value in zip(chunk, logits[:, 0].float().tolist(), strict=True):
                    out[i] = float(value)
    finally:
        model.train(was_training)
    return out


# ---- scorers ------------------------------------------------------------------------------------


class RewardScorer:
    """Raw scores of (conversation, response) pairs, each computed once; batched by ``prepare``.

    The model is loaded on first use, once, and shared by every critic that names it.
    """

    def __init__(self, spec: RewardModelSpec):
        self.spec = spec
        self._raw: dict[str, float] = {}
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self.passes = 0
        self.scored = 0

    @property
    def version(self) -> str:
        return self.spec.label

    def prepare(self, cases: Sequence[Case]) -> None:
        self.score_many([(_conversation(c), c.judged_text) for c in cases])

    def raw(self, case: Case) -> float:
        return self.score_many([(_conversation(case), case.judged_text)])[0]

    def seen(self, keys: Iterable[str]) -> list[float]:
        """The raw scores already computed for these response keys (unscored ones left out)."""
        with self._lock:
            return [self._raw[k] for k in keys if k in self._raw]

    def score_many(self, items: Sequence[tuple[Conversation, str]]) -> list[float]:
        """Raw scores of each (conversation, response), scoring the ones not seen yet in one
        batched pass (or one set of concurrent requests to a server)."""
        keys = [_key(conv, text) for conv, text in items]
        with self._lock:
            todo = {k: item for k, item in zip(keys, items, strict=True) if k not in self._raw}
            if todo:
                todo_items = list(todo.values())
                if self.spec.served:
                    values = self._score_served(todo_items)
                else:
                    values = self._score_local(todo_items)
                self._raw.update(zip(todo, values, strict=True))
                self.passes += 1
                self.scored += len(todo)
            return [self._raw[k] for k in keys]

    def _score_local(self, items: Sequence[tuple[Conversation, str]]) -> list[float]:
        from ..agents import pick_device

        if self._model is None:
            device = pick_device(self.spec.device)
            self._model, self._tokenizer = load_sequence_classifier(self.spec, device)
        return score_batched(
            self._model, self._tokenizer, items, self.spec.max_length, self.spec.batch_size
        )

    def _score_served(self, items: Sequence[tuple[Conversation, str]]) -> list[float]:
        import httpx

        spec = self.spec
        url = spec.url.rstrip("/") + "/pooling"  # type: ignore[union-attr]
        headers = {}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ModelError(f"reward model {spec.name!r}: ${spec.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        model = spec.served_model or spec.model

        def one(client: httpx.Client, item: tuple[Conversation, str]) -> float:
            conv, text = item
            body: dict[str, Any] = {
                "messages": [*map(dict, conv), {"role": "assistant", "content": text}]
            }
            if model:
                body["model"] = model
            try:
                reply = client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise ModelError(
                    f"reward model {spec.name!r}: {url}: {type(exc).__name__}: {_first(exc)}"
                ) from None
            if reply.status_code != 200:
                raise ModelError(
                    f"reward model {spec.name!r}: {url} answered {reply.status_code}: "
                    f"{reply.text[:200]}"
                )
            score = _served_score(reply, spec.name)
            if spec.activation == "sigmoid":  # back to the logit: a probability saturates
                p = min(max(score, 1e-7), 1 - 1e-7)
                score = math.log(p / (1 - p))
            return score

        with (
            httpx.Client(timeout=spec.timeout) as client,
            ThreadPoolExecutor(max_workers=max(1, min(spec.batch_size, len(items)))) as pool,
        ):
            return list(pool.map(lambda item: one(client, item), items))


def _served_score(reply: Any, name: str) -> float:
    """The score in a vLLM pooling response: ``data[0].data`` is a number, ``[number]``, or one
    value per token (token-level reward heads), of which the last is the sequence's."""
    try:
        value: Any = reply.json()["data"][0]["data"]
        while isinstance(value, list):
            value = value[-1]
        score = float(value)
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelError(
            f"reward model {name!r}: the server's reply is not a pooling response: "
            f"{reply.text[:200]}"
        ) from None
    if not math.isfinite(score):
        raise ModelError(f"reward model {name!r}: the server returned {score}")
    return score


def _conversation(case: Case) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in case.conversation]


def _key(conversation: Conversation, response: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for m in conversation:
        digest.update(f"{m['role']}\x00{m['content']}\x00".encode("utf-8", "surrogatepass"))
    digest.update(b"=>\x00" + response.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


# ---- the critic ---------------------------------------------------------------------------------


class RewardModelCritic:
    """A critic whose score is a reward model's: on its own dimension (``reward_model``) or in
    place of another critic's (``helpfulness = "reward_model:NAME"`` in the profile's backends)."""

    backend = "reward_model"

    def __init__(self, name: str, dimension: str, scorer: RewardScorer, inner: Any = None):
        self.name = name
        self.dimension = dimension
        self.scorer = scorer
        self._inner = inner
        self.version = f"rm:{scorer.version}"
        self._rivals: dict[str, tuple[str, ...]] = {}  # response key -> its rivals' keys
        self._lock = threading.Lock()

    def applies(self, case: Case) -> bool:
        return self._inner.applies(case) if self._inner is not None else True

    def prepare(self, cases: Sequence[Case]) -> None:
        """Score ``cases`` in one pass, and remember which are rivals (answers to one prompt):
        a response's confidence is its margin over the closest rival."""
        cases = [c for c in cases if c.judged_text.strip()]
        self.scorer.prepare(cases)
        keys: dict[str, list[str]] = {}
        for case in cases:
            keys.setdefault(case.prompt_id, []).append(_key(_conversation(case), case.judged_text))
        with self._lock:
            for group in keys.values():
                for key in group:
                    self._rivals[key] = tuple(k for k in dict.fromkeys(group) if k != key)

    def __call__(self, case: Case, signals: Any = None) -> Score:
        if not case.judged_text.strip():
            return Score(self.dimension, 0.0, 1.0, "empty response", self.version, {})
        spec = self.scorer.spec
        raw = self.scorer.raw(case)
        score = spec.to_unit(raw)
        with self._lock:
            keys = self._rivals.get(_key(_conversation(case), case.judged_text), ())
        rivals = self.scorer.seen(keys)
        if rivals:  # P(this over its closest rival), read as a margin
            closest = min(rivals, key=lambda other: abs(raw - other))
            confidence = abs(2 * spec.to_unit(raw - closest + spec.center) - 1)
            margin = f"margin {raw - closest:+.3f} over the closest of {len(rivals)} rivals"
        else:
            confidence = abs(2 * score - 1)
            margin = "no rival: margin over a typical response"
        return Score(
            self.dimension,
            round(score, 6),
            round(confidence, 6),
            f"reward model {spec.name}: raw {raw:.3f}, P(preferred over a typical response) "
            f"{score:.2f}; {margin}",
            self.version,
            {
                "raw": raw,
                "rivals": len(rivals),
                "reward_model": spec.name,
                "truncated": case.truncated,
            },
        )


def prepare_reward_critics(critics: Mapping[str, Any], names: Sequence[str], cases) -> None:
    """Score ``cases`` with every reward-model critic among ``names``: one pass per model (a
    second critic on the same model finds the scores cached and only learns the rivals)."""
    for name in names:
        critic = critics.get(name)
        if isinstance(critic, RewardModelCritic):
            try:
                critic.prepare(cases)
            except Exception as exc:  # noqa: BLE001 - each critic call then reports it, unscored
                log.warning("reward model %s: %s", critic.scorer.spec.name, _first(exc))
