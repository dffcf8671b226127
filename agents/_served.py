"""The policy served by an OpenAI-compatible server: vLLM, SGLang, llama.cpp's server.

    vllm serve ~/.local/share/criticloop/models/smollm2-135m-instruct \\
        --served-model-name SmolLM2-135M-Instruct --enable-lora --max-lora-rank 16
    CRITICLOOP_POLICY__BASE_URL=http://127.0.0.1:8000/v1 criticloop graph run

:class:`ServedPolicy` writes through the same interface as :class:`~criticloop.agents.Policy`.
One chat request per prompt asks for its K candidates at once (``n``), with the run's seed,
temperature, top_p and length. The promoted LoRA adapter is what generates: it is loaded into
the server (vLLM's ``POST /v1/load_lora_adapter``, which needs
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) unless the server lists it already, then requested
by its version as the model name. The server reads the adapter from the path criticloop
stored, so it must see the same files (the same machine, or a shared folder).

The coherence critic's likelihood comes from the server's prompt logprobs (vLLM's
``prompt_logprobs`` and ``/tokenize``); a server that offers none raises
:class:`LikelihoodUnavailable`, and coherence goes on without it.

Requests share one limit per server (:mod:`._endpoints`): at most ``max_in_flight`` at once and
``requests_per_minute``. The OpenAI client retries 408, 409, 429 and 5xx answers with
exponential backoff, honouring ``Retry-After``; what still fails is a :class:`ModelError` naming
the server and the status.
"""

from __future__ import annotations

import copy
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ModelError
from ..settings import PolicySettings, Settings
from ._endpoints import EndpointLimit, endpoint_limit
from ._models import ModelRef, policy_ref
from ._policy import BatchStats, Candidate, Policy, Sampling
from ._teacher import NO_KEY
from ._text import encodable


class LikelihoodUnavailable(ModelError):
    """The server offers no prompt logprobs: the coherence critic runs without likelihood."""


@dataclass
class Replica:
    """One server of the policy: its URL, OpenAI client and in-flight limit."""

    base_url: str
    client: Any
    limit: EndpointLimit


class ServedPolicy:
    """Candidates and likelihoods from a served model; duck-types :class:`Policy`.

    Several servers (replicas, comma-separated in BASE_URL) share the work: each request goes
    to the replica with the fewest requests in flight, and every replica is given the adapter.
    Replicas serve the same weights, and the seed is in the request, so it does not matter
    which one answers."""

    def __init__(self, settings: PolicySettings, ref: ModelRef):
        if not settings.base_url:
            raise ConfigError("no policy server: set CRITICLOOP_POLICY__BASE_URL")
        from openai import OpenAI

        self.settings = settings
        self.base_url = settings.base_url  # as configured: one URL, or several
        # Records carry the policy's own name, so adapters trained on it are found for it.
        self.ref = ModelRef(name=ref.name, source=self.base_url)
        self.base_name = settings.request_name
        self.request_name = self.base_name  # the adapter's version once one is loaded
        self.adapter_version: str | None = None
        key = settings.api_key.get_secret_value() if settings.api_key else NO_KEY
        self.replicas = [
            Replica(
                url,
                OpenAI(
                    base_url=url,
                    api_key=key,
                    timeout=settings.timeout,
                    max_retries=settings.max_retries,
                ),
                endpoint_limit(url, settings.max_in_flight, settings.requests_per_minute),
            )
            for url in settings.base_urls
        ]
        self._pick = threading.Lock()
        self.lock = threading.Lock()  # Policy's; nothing here needs it
        self.served = True

    @property
    def limit(self) -> EndpointLimit:
        """The first replica's limit (the only one, usually)."""
        return self.replicas[0].limit

    @property
    def max_in_flight(self) -> int:
        return sum(r.limit.max_in_flight for r in self.replicas)

    def _replica(self) -> Replica:
        with self._pick:
            return min(self.replicas, key=lambda r: r.limit.in_flight)

    # ---- adapters ------------------------------------------------------------------------------

    def served_models(self, replica: Replica | None = None) -> set[str]:
        """The names a server answers to (``GET /models``): the first one by default."""
        replica = replica or self.replicas[0]
        with replica.limit:
            try:
                return {m.id for m in replica.client.models.list()}
            except Exception as exc:  # noqa: BLE001 - the client's errors come in many types
                raise _error(replica, "GET /models", exc) from None

    def ensure_adapter(self, path: str, version: str) -> None:
        """Make every server serve adapter ``version`` (from ``path``) unless it does already."""
        for replica in self.replicas:
            if version in self.served_models(replica):
                continue
            with replica.limit:
                try:
                    replica.client.post(
                        "/load_lora_adapter",
                        body={"lora_name": version, "lora_path": str(path)},
                        cast_to=str,
                    )
                except Exception as exc:  # noqa: BLE001
                    raise _error(replica, f"loading adapter {version!r} from {path}", exc) from None

    def load_adapter(self, path: str, version: str) -> None:
        """Generate with a trained LoRA adapter: loaded into the server, requested by name."""
        self.ensure_adapter(path, version)
        self.request_name = version
        self.adapter_version = version

    def using(self, version: str | None) -> ServedPolicy:
        """This policy requesting adapter ``version`` (None: the base model); the adapter must
        be loaded (:meth:`ensure_adapter`)."""
        other = copy.copy(self)
        other.request_name = version or self.base_name
        other.adapter_version = version
        return other

    # ---- generation ---------------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[tuple[str, list[dict[str, str]], Sequence[int]]],
        sampling: Sampling,
        batch_size: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> Iterator[list[Candidate]]:
        """One chat request per prompt for all its candidates (``n``), up to the server's
        in-flight limit at once; yields each prompt's candidates as its answer arrives, in
        order. ``batch_size`` is the in-process policy's and plays no part here."""
        del batch_size
        if not requests:
            return
        workers = min(self.max_in_flight, len(requests))
        with ThreadPoolExecutor(workers, thread_name_prefix="policy") as pool:
            futures = [pool.submit(self._complete, r, sampling) for r in requests]
            try:
                for future in futures:
                    candidates, seconds = future.result()
                    if on_batch:
                        tokens = sum(c.completion_tokens for c in candidates)
                        on_batch(BatchStats(len(candidates), tokens, seconds))
                    yield candidates
            finally:
                for future in futures:
                    future.cancel()

    def _complete(
        self, request: tuple[str, list[dict[str, str]], Sequence[int]], sampling: Sampling
    ) -> tuple[list[Candidate], float]:
        import httpx  # the OpenAI client's, loaded with it

        key, conversation, indices = request
        indices = list(indices)
        # Seeded by the prompt and its first candidate, so a resumed run asks for the same.
        seed = (sampling.seed * 1_000_003 + zlib.crc32(f"{key}#{indices[0]}".encode())) % 2**31
        body = {
            "model": self.request_name,
            "messages": _encodable(conversation),
            "n": len(indices),
            "seed": seed,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
            "max_tokens": sampling.max_new_tokens,
            "return_token_ids": True,  # per-candidate token counts (vLLM)
        }
        began = time.perf_counter()
        replica = self._replica()
        doing = f"generating for prompt {key!r}"
        with replica.limit:
            try:
                # The client's post, with its retries, backoff and errors, but neither its
                # typed request transform nor its response model: together about 40% of the
                # CPU of a request, which the orchestrator spends once a prompt.
                reply = replica.client.post("/chat/completions", body=body, cast_to=httpx.Response)
                answer = reply.json()
            except Exception as exc:  # noqa: BLE001
                raise _error(replica, doing, exc) from None
        seconds = time.perf_counter() - began
        try:
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            usage = answer.get("usage") or {}
            prompt_tokens = usage.get("prompt_tokens") or 0
            total = usage.get("completion_tokens") or 0
            replies = [
                (
                    (choice["message"].get("content") or "").strip(),
                    choice.get("token_ids"),
                    choice.get("finish_reason"),
                )
                for choice in choices
            ]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"policy server {replica.base_url} {doing}: not a chat completion "
                f"(no {exc}): {str(answer)[:200]}"
            ) from None
        if len(replies) != len(indices):
            raise ModelError(
                f"policy server {replica.base_url} answered {len(replies)} choices for n="
                f"{len(indices)} (prompt {key!r}): does it support n?"
            )
        candidates = []
        for index, (text, ids, finish) in zip(indices, replies, strict=True):
            tokens = len(ids) if ids else round(total / len(replies))
            candidates.append(
                Candidate(
                    key=key,
                    index=index,
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=tokens,
                    finish_reason="length" if finish == "length" else "stop",
                )
            )
        return candidates, seconds

    # ---- likelihood ---------------------------------------------------------------------------

    def response_logprobs(
        self, items: Sequence[tuple[list[dict[str, str]], str]], max_tokens: int
    ) -> list[list[float]]:
        """Each reply's token log-probabilities given its conversation (at most ``max_tokens``),
        from the server's prompt logprobs; an empty reply gets an empty list. Raises
        :class:`LikelihoodUnavailable` when the server offers none."""
        workers = max(1, min(self.max_in_flight, len(items)))
        with ThreadPoolExecutor(workers, thread_name_prefix="policy-lp") as pool:
            return list(pool.map(lambda item: self._logprobs(*item, max_tokens), items))

    def _logprobs(
        self, conversation: list[dict[str, str]], reply: str, max_tokens: int
    ) -> list[float]:
        if not reply.strip():
            return []
        messages = _encodable(conversation)
        replica = self._replica()
        root = replica.base_url.removesuffix("/v1")
        prefix = self._post(
            replica,
            root + "/tokenize",
            {"model": self.request_name, "messages": messages, "add_generation_prompt": True},
        )
        body = {
            "model": self.request_name,
            "messages": [*messages, {"role": "assistant", "content": encodable(reply)}],
            "add_generation_prompt": False,
            "continue_final_message": True,
            "max_tokens": 1,
            "prompt_logprobs": 0,
        }
        answer = self._post(replica, replica.base_url + "/chat/completions", body)
        scored = answer.get("prompt_logprobs")
        ids = answer.get("prompt_token_ids")
        if not scored or "count" not in prefix:
            raise LikelihoodUnavailable(
                f"policy server {replica.base_url} returned no prompt logprobs"
            )
        ids = ids or [int(next(iter(entry))) if entry else None for entry in scored]
        out = []
        for token, entry in zip(ids[prefix["count"] :], scored[prefix["count"] :], strict=False):
            if entry is None:
                continue
            chosen = entry.get(str(token)) or next(iter(entry.values()))
            out.append(float(chosen["logprob"]))
        return out[:max_tokens]

    def _post(self, replica: Replica, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """A vLLM extension's request (``url`` absolute: vLLM's /tokenize sits beside /v1, not
        under it) through the replica's OpenAI client: its pooled connections, key, retries
        and backoff, but not its types, which drop the extra fields of the answer."""
        import httpx

        with replica.limit:
            try:
                response = replica.client.post(url, body=body, cast_to=httpx.Response)
            except Exception as exc:  # noqa: BLE001 - the client's errors come in many types
                if getattr(exc, "status_code", None) in (400, 404, 405, 422, 501):
                    raise LikelihoodUnavailable(
                        f"policy server {url} answered {exc.status_code}: no prompt logprobs"
                    ) from None
                raise _error(replica, f"POST {url}", exc) from None
        try:
            return response.json()
        except ValueError:
            raise ModelError(f"policy server {url} answered {response.text[:200]!r}") from None


def _error(replica: Replica, doing: str, exc: BaseException) -> ModelError:
    status = getattr(exc, "status_code", None)
    what = f"answered {status}" if status else type(exc).__name__
    body = getattr(exc, "body", None)  # the server's error object, when it sent one
    detail = body.get("message") if isinstance(body, dict) else None
    detail = str(detail or getattr(exc, "message", "") or exc).splitlines()[0][:200]
    return ModelError(f"policy server {replica.base_url} {what} {doing}: {detail}")


def _encodable(conversation: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": encodable(m["content"])} for m in conversation]


def open_policy(settings: Settings, ref: ModelRef | None = None) -> Policy | ServedPolicy:
    """The configured policy, ready to write: served when ``policy.base_url`` is set (nothing
    loads here), else loaded in-process. ``ref`` names it (default: the configured policy)."""
    if settings.policy.base_url:
        return ServedPolicy(settings.policy, ref or policy_ref(settings, convert=False))
    return Policy.load(settings, ref or policy_ref(settings))
