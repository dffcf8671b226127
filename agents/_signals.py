"""The expensive signals critics share: sentence embeddings and the policy's likelihood.

:meth:`Signals.prepare` embeds every text the critics will ask about for a batch of cases in
one pass, and scores every response under the policy in one batched forward pass. Critics then
read from the caches; anything not prepared is computed on demand and counted in ``stats`` as a
miss, so a benchmark can show the sharing works.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._served import LikelihoodUnavailable
from ._text import encodable as _encodable
from ._text import find_ad, sentences

if TYPE_CHECKING:
    from ._critic import Case
    from ._policy import Policy

NLL_MAX_RESPONSE_TOKENS = 512


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
        self._vectors: dict[str, np.ndarray] = {}
        self._nll: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.likelihood_missing: str | None = None  # why, when the policy offers none

    # ---- embeddings --------------------------------------------------------------------------

    def prepare(self, cases: Sequence[Case]) -> None:
        """One embedding pass over all texts of ``cases`` and one forward pass over responses."""
        self._embed_missing(t for case in cases for t in texts_for(case))
        if self.policy is not None:
            self._score_missing(cases)

    def _embed_missing(self, texts: Iterable[str]) -> None:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
            if not missing:
                return
            vectors = self.embedder.encode(
                [_encodable(t) for t in missing],
                batch_size=64,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            self.stats["embedding_passes"] += 1
            self.stats["texts_embedded"] += len(missing)
            for text, vector in zip(missing, vectors, strict=True):
                self._vectors[text] = np.asarray(vector, dtype=np.float32)

    def embed(self, text: str) -> np.ndarray:
        vector = self._vectors.get(text)
        if vector is None:
            self.stats["embedding_misses"] += 1
            self._embed_missing([text])
            vector = self._vectors[text]
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
        if key not in self._nll:
            self.stats["nll_misses"] += 1
            self._score_missing([case])
        return self._nll.get(key)

    def _score_missing(self, cases: Sequence[Case]) -> None:
        with self._lock:
            if self.policy is None:  # another thread found the server offers no likelihood
                return
            todo = {}
            for case in cases:
                key = _nll_key(case)
                if key not in self._nll and key not in todo and case.judged_text.strip():
                    todo[key] = case
            if not todo:
                return
            items = [
                ([{"role": r, "content": c} for r, c in case.conversation], case.judged_text)
                for case in todo.values()
            ]
            try:
                token_lp = self.policy.response_logprobs(items, NLL_MAX_RESPONSE_TOKENS)
            except LikelihoodUnavailable as exc:  # a server without prompt logprobs
                self.likelihood_missing = str(exc)
                self.policy = None
                return
            self.stats["forward_passes"] += 1
            self.stats["responses_scored"] += len(items)
            for key, lps in zip(todo, token_lp, strict=True):
                if lps:
                    self._nll[key] = (-sum(lps) / len(lps), len(lps))


def _nll_key(case: Case) -> str:
    flat = [f"{r}:{c}" for r, c in case.conversation]
    return _key(*flat, "=>", case.judged_text)
