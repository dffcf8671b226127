"""The policy: turns stored prompts into chat conversations and samples K candidates each.

Generation is batched over (prompt, candidate) sequences sorted by length, so little compute
goes to padding, and yields after every batch so callers can record as they go.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..settings import Settings
from ._models import ModelRef, load_causal_lm, policy_ref
from ._text import encodable

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    key: str
    index: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)


@dataclass(frozen=True)
class BatchStats:
    sequences: int
    completion_tokens: int
    seconds: float


def _template(name: str) -> str | None:
    path = _TEMPLATES / f"{name}.txt"
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def build_conversation(
    prompt: dict[str, Any],
    brand: dict[str, Any] | None = None,
    campaign: dict[str, Any] | None = None,
) -> list[dict[str, str]]:
    """The chat messages the policy sees: the stored conversation plus a task system message."""
    template = _template(prompt["task_type"])
    messages = [dict(m) for m in prompt["messages"]]
    if template is None:
        return messages
    voice = (brand or {}).get("voice") or {}
    compliance = {**((brand or {}).get("compliance") or {})}
    compliance.update({k: v for k, v in ((campaign or {}).get("compliance") or {}).items() if v})
    fields = {
        "brand": (brand or {}).get("name", "the brand"),
        "tone": voice.get("tone") or "clear and friendly",
        "voice_description": voice.get("description", ""),
        "persona": prompt.get("persona") or "",
        "product": (campaign or {}).get("product", ""),
        "ad_copy": (campaign or {}).get("ad_copy", ""),
        "disclosure": (compliance.get("required_disclosure") or "Sponsored").rstrip(":"),
    }
    system = template.format(**fields).strip()
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": f"{system}\n\n{messages[0]['content']}"}
    else:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def build_revision(
    prompt: dict[str, Any], answer: str, problems: list[str], max_answer_chars: int = 4000
) -> list[dict[str, str]]:
    """The conversation asking the policy to rewrite ``answer`` so it fixes ``problems``
    (the critics' rationales): the earlier turns, then the rewrite request as the user's turn."""
    request = _template("revise").format(
        request=prompt["messages"][-1]["content"],
        answer=answer[:max_answer_chars],
        problems="\n".join(f"- {p}" for p in problems),
    )
    return [*prompt["messages"][:-1], {"role": "user", "content": request}]


class Policy:
    """A causal LM with its tokenizer, ready to sample candidates."""

    def __init__(
        self, model: Any, tokenizer: Any, device: str, ref: ModelRef, max_prompt_tokens: int
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.ref = ref
        self.max_prompt_tokens = max_prompt_tokens
        self.adapter_version: str | None = None  # set when a trained LoRA adapter is loaded
        # One forward pass at a time: torch already spreads each over every core, and two at
        # once (prompts judged in parallel threads) oversubscribe them several times over.
        self.lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, ref: ModelRef | None = None) -> Policy:
        ref = ref or policy_ref(settings)
        model, tokenizer, device = load_causal_lm(
            ref, settings.policy.device, settings.policy.dtype
        )
        return cls(model, tokenizer, device, ref, settings.generation.max_prompt_tokens)

    def load_adapter(self, path: str, version: str) -> None:
        """Generate with a trained LoRA adapter on top of the base weights (imports peft)."""
        from peft import PeftModel

        try:
            self.model = PeftModel.from_pretrained(self.model, path).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load adapter {version!r} from {path}: {exc}") from None
        self.adapter_version = version

    def encode(self, conversation: list[dict[str, str]]) -> list[int]:
        """Token ids of the conversation under the chat template, ready for the reply.

        Too-long conversations drop their oldest non-system turns first; a last user turn that is
        itself too long keeps its end.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(
                f"policy {self.ref.name!r} has no chat template; use an instruct model"
            )
        messages = [{**m, "content": encodable(m["content"])} for m in conversation]
        while True:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
            if len(ids) <= self.max_prompt_tokens:
                return ids
            droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
            if not droppable:
                return ids[-self.max_prompt_tokens :]
            del messages[droppable[0]]

    def response_logprobs(
        self, items: Sequence[tuple[list[dict[str, str]], str]], max_tokens: int
    ) -> list[list[float]]:
        """Each reply's token log-probabilities given its conversation (at most ``max_tokens``
        tokens of it), under the model as it stands (with whichever adapter is active), in one
        padded forward pass. An empty reply gets an empty list."""
        import torch

        tokenizer = self.tokenizer
        rows = []
        for conversation, reply in items:
            ids = tokenizer(encodable(reply), add_special_tokens=False)["input_ids"][:max_tokens]
            rows.append((self.encode(conversation) if ids else [], ids))
        scored = [i for i, (_, reply) in enumerate(rows) if reply]
        out: list[list[float]] = [[] for _ in rows]
        if not scored:
            return out
        width = max(len(rows[i][0]) + len(rows[i][1]) for i in scored)
        ids = torch.full((len(scored), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(scored), width), dtype=torch.long)
        for row, i in enumerate(scored):
            seq = rows[i][0] + rows[i][1]
            ids[row, width - len(seq) :] = torch.tensor(seq)  # left padding, as in generation
            mask[row, width - len(seq) :] = 1
        # Replies sit at the right edge, so only the last max_n + 1 positions' logits are
        # needed: a vocabulary-sized row per reply token, not per prompt token.
        max_n = max(len(rows[i][1]) for i in scored)
        with self.lock, torch.inference_mode():
            logits = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                logits_to_keep=max_n + 1,
            ).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, width - max_n :].to(self.device)
        token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        for row, i in enumerate(scored):
            n = len(rows[i][1])
            out[i] = token_lp[row, max_n - n :].tolist()
        return out

    def generate(
        self,
        requests: Sequence[tuple[str, list[dict[str, str]], Sequence[int]]],
        sampling: Sampling,
        batch_size: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> Iterator[list[Candidate]]:
        """Sample candidates for ``(key, conversation, candidate indices)`` requests.

        Yields one list of candidates per batch of ``batch_size`` sequences.
        """
        import torch

        work = []
        for key, conversation, indices in requests:
            ids = self.encode(conversation)
            work.extend((key, index, ids) for index in indices)
        work.sort(key=lambda item: len(item[2]))  # similar lengths share a batch: less padding
        pad_id = self.tokenizer.pad_token_id
        eos_ids = _eos_ids(self.model, self.tokenizer)
        for start in range(0, len(work), batch_size):
            batch = work[start : start + batch_size]
            width = max(len(ids) for _, _, ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, _, ids) in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            # Seeded by what is in the batch, so a resumed run samples each batch reproducibly.
            label = "|".join(f"{key}#{index}" for key, index, _ in batch)
            torch.manual_seed(sampling.seed * 1_000_003 + zlib.crc32(label.encode()))
            began = time.perf_counter()
            with self.lock, torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention.to(self.device),
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature if sampling.temperature > 0 else None,
                    top_p=sampling.top_p if sampling.temperature > 0 else None,
                    top_k=None,
                    pad_token_id=pad_id,
                    eos_token_id=eos_ids,
                )
            seconds = time.perf_counter() - began
            candidates = []
            for row, (key, index, ids) in enumerate(batch):
                new = output[row, width:].tolist()
                stop = next((i for i, tok in enumerate(new) if tok in eos_ids), None)
                tokens = new if stop is None else new[:stop]
                candidates.append(
                    Candidate(
                        key=key,
                        index=index,
                        text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                        prompt_tokens=len(ids),
                        completion_tokens=len(tokens) + (stop is not None),
                        finish_reason="stop" if stop is not None else "length",
                    )
                )
            if on_batch:
                tokens = sum(c.completion_tokens for c in candidates)
                on_batch(BatchStats(len(batch), tokens, seconds))
            yield candidates


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
