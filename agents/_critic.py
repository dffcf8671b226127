"""What every critic shares: the case it judges, the score it returns, and the registry.

A critic is made by a factory registered by name (its keyword arguments are its
configuration) and is called with a :class:`Case` and the run's shared :class:`Signals`.
It returns a :class:`Score`: higher is always better for the reward, ``score is None`` means
it could not judge (the reason is the rationale), and ``veto`` marks a hard rule violation.
A critic never raises for a bad text: the graph turns exceptions into unscored results too.

The built-in critics are built on :class:`BaseCritic`, which holds what they share (identity,
when they apply, the unscored early returns and their reasons), so each module in
``agents/critics/`` keeps only its own judging.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._signals import Signals

MAX_JUDGED_CHARS = 20_000
"""Longer responses are judged on their first MAX_JUDGED_CHARS characters (said in evidence)."""


@dataclass(frozen=True)
class Score:
    dimension: str
    score: float | None
    confidence: float | None
    rationale: str
    critic_version: str
    evidence: dict[str, Any] = field(default_factory=dict)
    veto: bool = False

    @property
    def scored(self) -> bool:
        return self.score is not None

    @classmethod
    def unscored(
        cls, dimension: str, reason: str, version: str, evidence: dict[str, Any] | None = None
    ) -> Score:
        return cls(dimension, None, None, reason, version, evidence or {})

    def as_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "score": self.score,
            "confidence": self.confidence,
            "rationale": self.rationale,
            "critic_version": self.critic_version,
            "evidence": self.evidence,
            "veto": self.veto,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        return cls(**data)


@dataclass(frozen=True)
class Case:
    """One candidate response in its context: everything a critic may look at."""

    prompt_id: str
    task_type: str
    conversation: tuple[tuple[str, str], ...]  # (role, content), ending with the user's turn
    response: str
    persona: str | None = None
    brand: dict[str, Any] | None = None  # as stored: name, voice{}, compliance{}
    campaign: dict[str, Any] | None = None  # as stored: product, ad_copy, keywords, compliance{}
    finish_reason: str | None = None

    @classmethod
    def of(
        cls,
        prompt: dict[str, Any],
        brand: dict[str, Any] | None,
        campaign: dict[str, Any] | None,
        response: str,
        finish_reason: str | None = None,
    ) -> Case:
        """The case of ``response`` to a stored prompt (as ``Store.prompt_context`` gives it)."""
        return cls(
            prompt_id=prompt["id"],
            task_type=prompt["task_type"],
            conversation=tuple((m["role"], m["content"]) for m in prompt["messages"]),
            response=response,
            persona=prompt.get("persona"),
            brand=brand,
            campaign=campaign,
            finish_reason=finish_reason,
        )

    @property
    def request(self) -> str:
        return self.conversation[-1][1]

    @property
    def judged_text(self) -> str:
        return self.response[:MAX_JUDGED_CHARS]

    @property
    def truncated(self) -> bool:
        return len(self.response) > MAX_JUDGED_CHARS

    @property
    def compliance(self) -> dict[str, Any]:
        """The brand's policy with the campaign's rules added."""
        policy: dict[str, Any] = dict((self.brand or {}).get("compliance") or {})
        extra = (self.campaign or {}).get("compliance") or {}
        for key, value in extra.items():
            if isinstance(value, list):
                policy[key] = [*policy.get(key, []), *value]
            elif value:
                policy[key] = value
        return policy

    @property
    def voice(self) -> dict[str, Any]:
        return (self.brand or {}).get("voice") or {}


class Critic(Protocol):
    name: str
    dimension: str
    version: str

    def applies(self, case: Case) -> bool:
        """Whether this critic has anything to say about the case (e.g. ad critics need a campaign)."""
        ...

    def __call__(self, case: Case, signals: Signals) -> Score: ...


# ---- the skeleton the built-in critics share ----------------------------------------------------

NEEDS: dict[str, tuple[Callable[[Case], bool], str]] = {
    "campaign": (lambda case: bool(case.campaign), "no campaign attached"),
    "brand": (lambda case: bool(case.brand), "no brand attached"),
    "persona": (lambda case: bool(case.persona and case.persona.strip()), "no persona given"),
}
"""What a critic may need of a case: need -> (whether the case has it, the unscored reason)."""


class BaseCritic:
    """The skeleton of a built-in critic: it declares itself in its class line, judges in
    :meth:`judge`, and inherits the rest::

        @critic("salience")
        @dataclass(frozen=True)
        class SalienceCritic(BaseCritic, name="salience", version="1", needs=("campaign",)):
            def judge(self, case: Case, text: str, signals: Signals) -> Score: ...

    ``dimension`` defaults to ``name``; ``needs`` names parts of the case from :data:`NEEDS`.
    The critic applies where the case has every need, and calling it returns unscored, with
    the reason, for an empty response ("empty response") and then for each need the case
    lacks; otherwise it returns :meth:`judge` on the judged text (never empty).
    """

    name: str
    dimension: str
    version: str
    needs: tuple[str, ...] = ()

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        version: str | None = None,
        dimension: str | None = None,
        needs: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            cls.dimension = dimension or name
        elif dimension is not None:
            cls.dimension = dimension
        if version is not None:
            cls.version = version
        if needs is not None:
            unknown = sorted(set(needs) - set(NEEDS))
            if unknown:
                raise ValueError(f"{cls.__name__} needs unknown case parts {unknown}")
            cls.needs = tuple(needs)
        missing = [k for k in ("name", "dimension", "version") if not hasattr(cls, k)]
        if missing:
            raise TypeError(f"{cls.__name__} declares no {', '.join(missing)}")

    def applies(self, case: Case) -> bool:
        return all(NEEDS[need][0](case) for need in self.needs)

    def __call__(self, case: Case, signals: Signals) -> Score:
        text = case.judged_text
        if not text.strip():
            return self.unscored("empty response")
        for need in self.needs:
            present, reason = NEEDS[need]
            if not present(case):
                return self.unscored(reason)
        return self.judge(case, text, signals)

    def judge(self, case: Case, text: str, signals: Signals) -> Score:
        """The critic's own verdict on ``text`` (``case.judged_text``, not empty)."""
        raise NotImplementedError

    def scored(
        self,
        score: float,
        confidence: float,
        rationale: str,
        evidence: dict[str, Any],
        *,
        veto: bool = False,
    ) -> Score:
        """A score of this critic, its value and confidence rounded to 4 places."""
        return Score(
            self.dimension,
            round(score, 4),
            round(confidence, 4),
            rationale,
            self.version,
            evidence,
            veto,
        )

    def unscored(self, reason: str, evidence: dict[str, Any] | None = None) -> Score:
        return Score.unscored(self.dimension, reason, self.version, evidence)


def truncation(case: Case, *, flag: bool = True) -> dict[str, Any]:
    """Evidence that only the first MAX_JUDGED_CHARS characters were judged ({} if all were):
    ``truncated`` (unless ``flag`` is false), ``judged_chars`` and ``response_chars``."""
    if not case.truncated:
        return {}
    flagged: dict[str, Any] = {"truncated": True} if flag else {}
    return {**flagged, "judged_chars": len(case.judged_text), "response_chars": len(case.response)}


CRITICS: dict[str, Callable[..., Critic]] = {}


def critic(name: str) -> Callable[[Callable[..., Critic]], Callable[..., Critic]]:
    """Register a critic factory under ``name``."""

    def register(factory: Callable[..., Critic]) -> Callable[..., Critic]:
        if name in CRITICS:
            raise ValueError(f"critic {name!r} is registered twice")
        CRITICS[name] = factory
        return factory

    return register


def build_critic(name: str, **options: Any) -> Critic:
    from . import critics  # noqa: F401 - importing registers the built-in critics

    try:
        factory = CRITICS[name]
    except KeyError:
        known = ", ".join(sorted(CRITICS))
        raise KeyError(f"unknown critic {name!r} (known: {known})") from None
    return factory(**options)


def critic_versions(critics: Mapping[str, Critic]) -> dict[str, str]:
    """critic -> 'backend:version': what a run, a decision or a reward model judged with."""
    return {name: f"{getattr(c, 'backend', 'local')}:{c.version}" for name, c in critics.items()}


def clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return max(low, min(high, value))


def ramp(value: float, floor: float, ceiling: float) -> float:
    """0 at ``floor``, 1 at ``ceiling``, linear between, clamped."""
    return clamp((value - floor) / max(ceiling - floor, 1e-6))


def run_critic(critic: Critic, case: Case, signals: Signals) -> Score:
    """Call a critic; an exception becomes an unscored result with its reason, so a critic
    never crashes a run."""
    try:
        return critic(case, signals)
    except Exception as exc:  # noqa: BLE001 - any critic bug must not stop the nightly job
        reason = f"critic failed: {type(exc).__name__}: {str(exc)[:200]}"
        return Score.unscored(critic.dimension, reason, critic.version)
