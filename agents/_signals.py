"""The expensive signals critics share: sentence embeddings and the policy's likelihood.

:meth:`Signals.prepare` embeds every text the critics will ask about for a batch of cases in
one pass, and scores every response under the policy in one batched forward pass. Critics then
read from the caches; anything not prepared is computed on demand and counted in ``stats`` as a
miss, so a benchmark can show the sharing works.

Both caches keep the most recently used entries only (:data:`MAX_CACHED` each): a nightly run
of 100,000 prompts embeds about 1.5 million texts, 2 GB of vectors if all were kept. The
prompts in flight need a few thousand; an evicted text is embedded again when asked (a miss).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from ._served import LikelihoodUnavailable
from ._text import encodable as _encodable
from ._text import find_ad, sentences

if TYPE_CHECKING:
    from ._critic import Case
    from ._policy import Policy

NLL_MAX_RESPONSE_TOKENS = 512
V = TypeVar("V")
MAX_CACHED = 50_000
"""Entries each cache keeps (about 75 MB of MiniLM vectors)."""


def _key(*parts: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def texts_for(case: Case) -> list[str]:
    """Every text any built-in critic embeds for this case."""
    disclosure = case.compliance.get("required_disclosure")
    ad = find_ad(case.judged_text, case.brand, case.campaign, disclosure)
    texts = [case.judged_text, case.request, *sentences(case.judged_text)]
    if case.campaign:
        texts += [ad.rest, case.campaign.get("ad_copy", "")]
    texts += list(case.voice.get("exemplars") or [])
    if case.persona:
        texts.append(case.persona)
    return [t for t in texts if t and t.strip()]


class Signals:
    """Caches of embeddings and response likelihoods for one run."""

    def __init__(self, embedder: Any, policy: Policy | None = None):
        self.embedder = embedder
        self.policy = policy
        self._vectors: _Recent[np.ndarray] = _Recent(MAX_CACHED)
        self._nll: _Recent[tuple[float, int]] = _Recent(MAX_CACHED)
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.likelihood_missing: str | None = None  # why, when the policy offers none

    # ---- embeddings --------------------------------------------------------------------------

    def prepare(self, cases: Sequence[Case]) -> None:
        """One embedding pass over all texts of ``cases`` and one forward pass over responses."""
        self._embed_missing(t for case in cases for t in texts_for(case))
        if self.policy is not None:
            self._score_missing(cases)

    def _embed_missing(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Embed the texts not cached; return every text's vector (kept even if evicted)."""
        with self._lock:
            wanted = list(dict.fromkeys(texts))
            found = {t: v for t in wanted if (v := self._vectors.get(t)) is not None}
            missing = [t for t in wanted if t not in found]
            if not missing:
                return found
            vectors = self.embedder.encode(
                [_encodable(t) for t in missing],
                batch_size=64,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            self.stats["embedding_passes"] += 1
            self.stats["texts_embedded"] += len(missing)
            for text, vector in zip(missing, vectors, strict=True):
                found[text] = self._vectors.put(text, np.asarray(vector, dtype=np.float32))
            return found

    def embed(self, text: str) -> np.ndarray:
        vector = self._vectors.get(text)
        if vector is None:
            self.stats["embedding_misses"] += 1
            vector = self._embed_missing([text])[text]
        return vector

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts' embeddings (-1..1)."""
        return float(self.embed(a) @ self.embed(b))

    # ---- likelihood under the policy ---------------------------------------------------------

    def response_nll(self, case: Case) -> tuple[float, int] | None:
        """Mean negative log-likelihood per token of the response given the conversation, and
        the token count; None without a policy or for an empty response."""
        if self.policy is None or not case.judged_text.strip():
            return None
        key = _nll_key(case)
        found = self._nll.get(key)
        if found is None:
            self.stats["nll_misses"] += 1
            found = self._score_missing([case]).get(key)
        return found

    def _score_missing(self, cases: Sequence[Case]) -> dict[str, tuple[float, int]]:
        """Score the responses not cached; return what this pass scored. The server is asked
        outside the lock: judging threads score their prompts at once, as many as the policy
        server's in-flight limit lets through."""
        with self._lock:
            policy = self.policy
            if policy is None:  # another thread found the server offers no likelihood
                return {}
            todo = {}
            for case in cases:
                key = _nll_key(case)
                if key not in self._nll and key not in todo and case.judged_text.strip():
                    todo[key] = case
        if not todo:
            return {}
        items = [
            ([{"role": r, "content": c} for r, c in case.conversation], case.judged_text)
            for case in todo.values()
        ]
        try:
            token_lp = policy.response_logprobs(items, NLL_MAX_RESPONSE_TOKENS)
        except LikelihoodUnavailable as exc:  # a server without prompt logprobs
            with self._lock:
                self.likelihood_missing = str(exc)
                self.policy = None
            return {}
        scored = {}
        with self._lock:
            self.stats["forward_passes"] += 1
            self.stats["responses_scored"] += len(items)
            for key, lps in zip(todo, token_lp, strict=True):
                if lps:
                    scored[key] = self._nll.put(key, (-sum(lps) / len(lps), len(lps)))
        return scored


class _Recent(Generic[V]):
    """A dict of at most ``size`` entries that forgets the least recently used; thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: V) -> V:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _nll_key(case: Case) -> str:
    flat = [f"{r}:{c}" for r, c in case.conversation]
    return _key(*flat, "=>", case.judged_text)
