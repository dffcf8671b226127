"""The critic crew: each critic as a CrewAI Agent judging with an LLM (the ``crew`` backend).

    CRITICLOOP_JUDGE__BACKEND=crew CRITICLOOP_JUDGE__MODEL=qwen2.5-7b-instruct \\
    CRITICLOOP_JUDGE__BASE_URL=http://judge-host:8000/v1 criticloop graph run

Each dimension's Agent takes its role, goal, backstory and rubric from
``agents/rubrics/<dimension>.yaml``; the task text comes from ``agents/templates/judge_pair.txt``
(two candidates) or ``judge_single.txt`` (one). The task's ``output_pydantic`` is the verdict
model, which becomes the same :class:`Score` the local critics return.

Judging discipline:

- **Pairs, both orders.** The graph compares candidates pairwise; each pair is judged as A-B
  and as B-A, both at once. Orders that prefer different candidates, or move the scores, lower
  the confidence, and a low confidence escalates the case to a person.
- **Bounded retries.** A verdict that is not valid JSON of the right shape is asked again up to
  ``judge.retries`` times; then the result is unscored (the graph escalates it), never a crash.
- **Rate-limited.** Every call waits on its endpoint's limit (:mod:`._endpoints`: the base URL,
  else the provider; ``judge.max_in_flight`` at once, ``judge.requests_per_minute``), shared by
  everything in the process that calls it. The OpenAI client under CrewAI retries 408, 409,
  429, 5xx and lost connections ``judge.max_retries`` times, waiting as ``Retry-After`` says
  (CrewAI's own rate-limit loop is turned off for these calls); what still fails is not
  asked again but unscored with the status in its reason.
- **Traced.** With LangSmith tracing on, each call is an ``llm`` run under its critic's node,
  with its tokens, and its cost where ``judge.prices`` knows the model.
- **Untrusted text.** Every judged text goes through :func:`neutralize` and sits between
  markers with a random nonce. Instructions aimed at the judge are quoted as data and set the
  candidate's score on that dimension to 0 with confidence 0: a person decides such a case,
  and a policy cannot learn to buy a verdict.
- **Quiet.** CrewAI telemetry and tracing are off, memory is off, nothing reaches stdout, and
  it keeps no task database (:class:`._crew_llm.JudgeCrew`; the critic records every call).
- **Cheap per call.** Each critic's Agent and Task give the prompt, which CrewAI builds once
  (:meth:`CrewCritic._messages`); every call sends it through the critic's CrewAI LLM, without
  a kickoff per call. An LLM object is reused by one call at a time (:meth:`JudgeLLM.borrow`).
  About 7 ms of CPU a call against a loopback judge (a kickoff per call: about 42).

LLMs: any CrewAI model string (native OpenAI, Anthropic, Gemini, Azure, Bedrock, Ollama; others
through the ``litellm`` extra), any OpenAI-compatible base URL, or ``bundled``: SmolLM2 through
a CrewAI ``BaseLLM`` adapter (:mod:`._crew_llm`). Offline and real, if weak: most of its
verdicts are malformed and escalate.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from ..errors import ConfigError
from ..settings import BUNDLED, JudgeSettings
from ._critic import Case, Critic, Score
from ._endpoints import endpoint_limit
from ._text import parse_verdict
from ._untrusted import fence, neutralize

VERSION = "1"
RUBRICS = Path(__file__).parent / "rubrics"
TEMPLATES = Path(__file__).parent / "templates"
MAX_CONTEXT_CHARS = 4000
FLIPPED_FACTOR = 0.25
"""Confidence kept when the two orders prefer different candidates."""


class PairVerdict(BaseModel):
    """What the judge returns for two responses on one dimension."""

    score_a: float = Field(ge=0, le=10)
    score_b: float = Field(ge=0, le=10)
    preferred: Literal["a", "b", "tie"]
    confidence: float = Field(ge=0, le=1)
    violation_a: bool = False
    violation_b: bool = False
    rationale: str = Field(min_length=1)


class SingleVerdict(BaseModel):
    """What the judge returns for one response on one dimension."""

    score: float = Field(ge=0, le=10)
    confidence: float = Field(ge=0, le=1)
    violation: bool = False
    rationale: str = Field(min_length=1)


@dataclass(frozen=True)
class Rubric:
    dimension: str
    role: str
    goal: str
    backstory: str
    rubric: str

    @classmethod
    def load(cls, dimension: str, directory: Path = RUBRICS) -> Rubric:
        path = directory / f"{dimension}.yaml"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls(
                dimension,
                **{k: str(data[k]).strip() for k in ("role", "goal", "backstory", "rubric")},
            )
        except FileNotFoundError:
            raise ConfigError(f"{path}: no rubric for critic {dimension!r}") from None
        except (KeyError, TypeError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"{path}: a rubric needs role, goal, backstory, rubric ({exc})"
            ) from None

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


@dataclass
class CallRecord:
    """One judgement as it happened: what the store's ``critic_calls`` keeps."""

    model: str
    order: str | None  # "ab" / "ba" for a pair, None for one response
    generation_ids: tuple[str, ...] = ()
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float | None = None
    ok: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Judgement:
    """A pair judged in both orders: a Score per candidate and the calls it took."""

    scores: tuple[Score, Score]
    calls: list[CallRecord] = field(default_factory=list)


class JudgeLLM:
    """Lends the CrewAI LLM a call runs on, and prices the call.

    An LLM is lent to one call at a time and kept for the next (:meth:`borrow`): building one
    costs about 50 ms of CPU (two OpenAI clients, each loading the CA bundle), more than CrewAI's
    whole kickoff. A call's tokens are the difference in its LLM's running totals."""

    def __init__(self, settings: JudgeSettings, load_policy: Callable[[], Any] | None = None):
        self.settings = settings
        self._load_policy = load_policy
        self._policy: Any = None
        self._lock = threading.Lock()
        self._policy_lock = threading.Lock()
        self._idle: list[Any] = []
        self.name = "bundled-smollm2" if settings.model == BUNDLED else settings.model

    @contextlib.contextmanager
    def borrow(self):
        """An idle LLM, or a new one when every one is busy; back to the pool after the call.
        The pool never holds more than the calls that ran at once."""
        with self._lock:
            llm = self._idle.pop() if self._idle else None
        if llm is None:
            llm = self.make()
        try:
            yield llm
        finally:
            with self._lock:
                self._idle.append(llm)

    def make(self) -> Any:
        s = self.settings
        if s.model == BUNDLED:
            from ._crew_llm import BundledLLM

            return BundledLLM(model=self.name, policy=self.policy(), max_new_tokens=s.max_tokens)
        from crewai import LLM

        kwargs: dict[str, Any] = {
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "timeout": s.timeout,
            "max_retries": s.max_retries,  # the OpenAI client's: 429/5xx, with Retry-After
        }
        if s.base_url:
            kwargs["base_url"] = s.base_url
        if s.api_key is not None:
            kwargs["api_key"] = s.api_key.get_secret_value()
        elif s.base_url:
            import os

            kwargs["api_key"] = os.environ.get("OPENAI_API_KEY") or "unused"
        model = s.model if "/" in s.model or not s.base_url else f"openai/{s.model}"
        try:
            return LLM(model=model, **kwargs)
        except ImportError as exc:
            raise ConfigError(
                f"CRITICLOOP_JUDGE__MODEL={s.model!r}: not a native CrewAI provider; install "
                f"criticloop[litellm] for it ({str(exc).splitlines()[0][:120]})"
            ) from None

    def limit(self, llm: Any) -> Any:
        """The limit a call through ``llm`` (from :meth:`make`) waits on: its endpoint's, shared
        with every caller of the same URL or provider; none for the bundled model, whose calls
        the policy's own lock takes one at a time."""
        s = self.settings
        if s.model == BUNDLED:
            return contextlib.nullcontext()
        endpoint = s.base_url or getattr(llm, "provider", None) or s.model
        return endpoint_limit(endpoint, s.max_in_flight, s.requests_per_minute)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """A call's tokens, and its cost when priced, as LangSmith's ``usage_metadata``."""
        usage: dict[str, Any] = {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cost_in, cost_out = self.cost(prompt_tokens, 0), self.cost(0, completion_tokens)
        if cost_in is not None and cost_out is not None:
            usage |= {
                "input_cost": cost_in,
                "output_cost": cost_out,
                "total_cost": round(cost_in + cost_out, 8),
            }
        return usage

    def policy(self) -> Any:
        with self._policy_lock:
            if self._policy is None:
                if self._load_policy is None:
                    raise ConfigError(
                        "the bundled judge needs the policy model, which is not loaded"
                    )
                self._policy = self._load_policy()
            return self._policy

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.settings.prices.get(self.name.split("/")[-1])
        if price is None or self.settings.model == BUNDLED:
            return None
        return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 8)


class CrewCritic:
    """A critic judged by a CrewAI Agent; answers where the local critic of its name applies."""

    backend = "crew"
    pairwise = True

    def __init__(self, name: str, local: Critic, llm: JudgeLLM, rubric: Rubric | None = None):
        self.name = name
        self.dimension = local.dimension
        self.local = local
        self.llm = llm
        self.rubric = rubric or Rubric.load(name)
        self.version = f"crew-{VERSION}+{self.rubric.digest}@{llm.name}"
        self._local_calls = threading.local()
        self._frames: dict[str | None, tuple[list[dict[str, Any]], Any, list[str]]] = {}
        self._frame_lock = threading.Lock()

    def applies(self, case: Case) -> bool:
        return self.local.applies(case)

    # ---- one response (rewards for PPO/GRPO/RLOO, and a candidate with nobody to pair) -----

    def __call__(self, case: Case, signals: Any = None) -> Score:
        text = neutralize(case.judged_text)
        description = _template("judge_single").format(
            dimension=self.dimension,
            context=context_of(case),
            rubric=self.rubric.rubric,
            response=fence("RESPONSE", text.text),
        )
        verdict, call = self._ask(description, SingleVerdict, None)
        self._local_calls.value = [call]
        evidence: dict[str, Any] = {"judge": self.llm.name, "attempts": call.attempts}
        if verdict is None:
            return Score.unscored(
                self.dimension, f"judge gave no valid verdict: {call.error}", self.version, evidence
            )
        score, confidence = verdict.score / 10, verdict.confidence
        if text.suspicious:
            score, confidence = 0.0, 0.0
            evidence["injection"] = list(text.findings)
        return Score(
            self.dimension,
            round(score, 4),
            round(confidence, 4),
            _why(verdict.rationale, text.suspicious),
            self.version,
            evidence,
            veto=self.dimension == "compliance" and verdict.violation,
        )

    def calls(self) -> list[CallRecord]:
        """The calls behind this thread's latest pointwise score."""
        return getattr(self._local_calls, "value", [])

    # ---- two responses, both orders ----------------------------------------------------------

    def compare(self, x: Case, y: Case, x_id: str = "", y_id: str = "") -> Judgement:
        """The pair judged as A-B and (with ``both_orders``) B-A, the two calls at once."""
        from langchain_core.runnables.config import ContextThreadPoolExecutor

        nx, ny = neutralize(x.judged_text), neutralize(y.judged_text)
        orders = [("ab", nx, ny)]
        if self.llm.settings.both_orders:
            orders.append(("ba", ny, nx))
        asks = []
        for label, first, second in orders:
            description = _template("judge_pair").format(
                dimension=self.dimension,
                context=context_of(x),
                rubric=self.rubric.rubric,
                response_a=fence("RESPONSE A", first.text),
                response_b=fence("RESPONSE B", second.text),
            )
            ids = (x_id, y_id) if label == "ab" else (y_id, x_id)
            asks.append((description, PairVerdict, label, ids))
        # The second order on a thread of its own while this one asks the first: one thread
        # started, not two. The context travels to it, so both calls trace under the node.
        if len(asks) == 1:
            answers = [self._ask(*asks[0])]
        else:
            with ContextThreadPoolExecutor(1, thread_name_prefix="judge") as pool:
                second = pool.submit(self._ask, *asks[1])
                answers = [self._ask(*asks[0]), second.result()]
        calls = [call for _, call in answers]
        results = [(c.order, v) for v, c in answers if v is not None]
        return Judgement(self._combine(results, nx, ny, len(orders), calls), calls)

    def _combine(
        self,
        results: list[tuple[str, PairVerdict]],
        nx: Any,
        ny: Any,
        asked: int,
        calls: Sequence[CallRecord] = (),
    ) -> tuple[Score, Score]:
        evidence: dict[str, Any] = {"judge": self.llm.name, "orders": {}}
        if not results:
            errors = list(dict.fromkeys(c.error for c in calls if c.error))
            reason = "judge gave no valid verdict in either order"
            if errors:
                reason += ": " + "; ".join(errors)
            return (
                Score.unscored(self.dimension, reason, self.version, evidence),
                Score.unscored(self.dimension, reason, self.version, evidence),
            )
        sx, sy, conf, prefs, vx, vy = [], [], [], [], [], []
        for label, v in results:
            x_first = label == "ab"
            sx.append((v.score_a if x_first else v.score_b) / 10)
            sy.append((v.score_b if x_first else v.score_a) / 10)
            vx.append(v.violation_a if x_first else v.violation_b)
            vy.append(v.violation_b if x_first else v.violation_a)
            prefs.append(
                {"a": "x" if x_first else "y", "b": "y" if x_first else "x", "tie": "tie"}[
                    v.preferred
                ]
            )
            conf.append(v.confidence)
            evidence["orders"][label] = v.model_dump()
        confidence = sum(conf) / len(conf)
        notes = []
        if len(results) == 2:
            shift = (abs(sx[0] - sx[1]) + abs(sy[0] - sy[1])) / 2
            confidence *= 1 - shift
            evidence["order_shift"] = round(shift, 4)
            if prefs[0] != prefs[1]:
                confidence *= FLIPPED_FACTOR
                notes.append("the judge's preference flips when the order is swapped")
                evidence["order_flip"] = True
        elif asked == 2:
            confidence *= 0.5
            notes.append("only one order gave a valid verdict")
        rationale = results[0][1].rationale
        scores = []
        for mine, violations, text in ((sx, vx, nx), (sy, vy, ny)):
            score = sum(mine) / len(mine)
            c = confidence
            ev = dict(evidence)
            veto = self.dimension == "compliance" and all(violations)
            mine_notes = list(notes)  # each candidate's own, not its opponent's
            if self.dimension == "compliance" and any(violations) and not veto:
                c *= FLIPPED_FACTOR
                mine_notes.append("a violation was flagged in one order only")
            if text.suspicious:
                score, c = 0.0, 0.0
                ev["injection"] = list(text.findings)
            why = _why("; ".join([rationale, *mine_notes]), text.suspicious)
            scores.append(
                Score(
                    self.dimension, round(score, 4), round(c, 4), why, self.version, ev, veto=veto
                )
            )
        return scores[0], scores[1]

    # ---- one call with bounded retries -------------------------------------------------------

    def _ask(
        self,
        description: str,
        model: type[BaseModel],
        order: str | None,
        generation_ids: tuple[str, ...] = (),
    ) -> tuple[BaseModel | None, CallRecord]:
        call = CallRecord(model=self.llm.name, order=order, generation_ids=generation_ids)
        began = time.perf_counter()
        for _ in range(1 + self.llm.settings.retries):
            call.attempts += 1
            raw, usage, error = self._call(description, model, order)
            call.prompt_tokens += usage[0]
            call.completion_tokens += usage[1]
            if error is not None:  # the client has retried what a retry can mend
                call.error = error
                break
            verdict = raw if isinstance(raw, BaseModel) else parse_verdict(raw, model)
            if verdict is not None:
                call.ok, call.error = True, None
                break
            call.error = f"malformed verdict: {str(raw)[:160]!r}"
        call.seconds = time.perf_counter() - began
        call.cost_usd = self.llm.cost(call.prompt_tokens, call.completion_tokens)
        return (verdict if call.ok else None), call

    def _call(
        self, description: str, model: type[BaseModel], order: str | None = None
    ) -> tuple[Any, tuple[int, int], str | None]:
        """One call of this critic's task: its agent's prompt (:meth:`_messages`) to its LLM,
        within its endpoint's limit and traced as an ``llm`` run: (verdict or raw text, tokens,
        error)."""
        quiet_crewai()
        from crewai_core.printer import set_suppress_console_output
        from langsmith import trace

        from ._crew_llm import client_retries_only, stop_words

        set_suppress_console_output(True)  # a context variable: set in the calling thread
        schema = self.llm.settings.structured_output == "schema"
        with self.llm.borrow() as llm:
            before = _usage(llm)
            try:
                messages, response_model, stop = self._messages(
                    description, model if schema else None
                )
            except Exception as exc:  # noqa: BLE001 - CrewAI could not build the prompt
                return None, (0, 0), f"{type(exc).__name__}: {str(exc)[:200]}"
            metadata = {
                "ls_provider": "local" if self.llm.settings.model == BUNDLED else llm.provider,
                "ls_model_name": self.llm.name,
                "ls_model_type": "chat",
                "ls_temperature": self.llm.settings.temperature,
                "ls_max_tokens": self.llm.settings.max_tokens,
                "critic": self.name,
                "order": order,
            }
            trace_messages = [{"role": m["role"], "content": m["content"]} for m in messages]
            try:
                with (
                    self.llm.limit(llm),
                    trace(
                        f"judge {self.llm.name}",
                        "llm",
                        inputs={"messages": trace_messages},
                        metadata=metadata,
                    ) as run,
                ):
                    with client_retries_only(), stop_words(llm, stop):
                        # 'prompt' mode: no response_format on the wire; _ask parses the text
                        out = llm.call(messages, response_model=response_model)
                    usage = _spent(llm, before)
                    raw = out.model_dump_json() if isinstance(out, BaseModel) else str(out)
                    run.end(
                        outputs={
                            "choices": [{"message": {"role": "assistant", "content": raw}}],
                            "usage_metadata": self.llm.usage(*usage),
                        }
                    )
            except Exception as exc:  # noqa: BLE001 - transport or provider failure: an attempt lost
                usage = _spent(llm, before)
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if schema and "response_format" in str(exc):
                    error += " (the server rejects structured output: CRITICLOOP_JUDGE__STRUCTURED_OUTPUT=prompt)"
                return None, usage, error
            return out, usage, None

    def _messages(
        self, description: str, model: type[BaseModel] | None
    ) -> tuple[list[dict[str, Any]], Any, list[str]]:
        """The messages, the response model and the stop words that CrewAI's agent executor
        sends for this critic's Agent (role, goal, backstory) and a Task of ``description`` with
        ``output_pydantic=model``.

        A judgement is one structured reply, without tools, memory or delegation; CrewAI's
        kickoff around that single LLM call (a Crew, a Flow-based executor, an event loop and a
        state class per run) cost about 42 ms of CPU a call, the call itself about 7. So each
        critic runs one kickoff per verdict model with a placeholder task against an LLM that
        stops at the request (:class:`._crew_llm.PromptCapture`), keeps the prompt CrewAI
        built, and from then on sends it, the task put in, through its CrewAI LLM's ``call``:
        the same request, as ``tests/test_crew.py`` checks against a full kickoff."""
        key = model.__name__ if model is not None else None
        with self._frame_lock:
            frame = self._frames.get(key)
            if frame is None:
                frame = self._frames[key] = self._capture(model)
        captured, response_model, stop = frame
        messages = []
        for message in captured:
            message = dict(message)
            content = message.get("content")
            if isinstance(content, str) and _PLACEHOLDER in content:
                message["content"] = content.replace(_PLACEHOLDER, description)
            messages.append(message)
        return messages, response_model, stop

    def _capture(
        self, model: type[BaseModel] | None
    ) -> tuple[list[dict[str, Any]], Any, list[str]]:
        quiet_crewai()
        from crewai import Agent, Task

        from ._crew_llm import Captured, JudgeCrew, PromptCapture

        agent = Agent(
            role=self.rubric.role,
            goal=self.rubric.goal,
            backstory=self.rubric.backstory,
            llm=PromptCapture(model="prompt-capture"),
            verbose=False,
            allow_delegation=False,
            max_iter=1,
            max_retry_limit=0,
            respect_context_window=False,
        )
        task = Task(
            description=_PLACEHOLDER,
            expected_output="Only the JSON verdict object.",
            agent=agent,
            output_pydantic=model,
        )
        crew = JudgeCrew(agents=[agent], tasks=[task], verbose=False, memory=False)
        try:
            crew.kickoff()
        except Captured as captured:
            texts = [str(m.get("content")) for m in captured.messages]
            if sum(text.count(_PLACEHOLDER) for text in texts) != 1:
                raise RuntimeError(
                    "CrewAI's judge prompt does not hold the task exactly once"
                ) from None
            return captured.messages, captured.response_model, captured.stop
        raise RuntimeError("CrewAI's kickoff made no LLM call")  # pragma: no cover


_PLACEHOLDER = "@@criticloop-task-description@@"


def verdict_types() -> tuple[type, ...]:
    """The OpenAI SDK's parsed-response classes, as this thread's context has them: built here
    if it has none, else a cache hit.

    The SDK parses every structured reply through ``ParsedChatCompletion[ResponseFormatT]``
    (its own type variable), its choice and its message. Pydantic keeps parametrized generic
    classes in a cache that is a context variable (pydantic 2.11 and later), holding them only
    weakly, and a new thread starts with no cache at all. So each judge call built all three
    again, schemas included, in the fresh threads LangGraph runs nodes on and the two orders
    get. Those threads copy the context of the thread that invoked the graph, and the copies
    share its cache: :func:`warm_thread` gives it one, with these classes in it."""
    from openai.types.chat import ParsedChatCompletion, ParsedChatCompletionMessage, ParsedChoice

    try:  # the SDK's type variable; without it, the shared cache alone still spares most builds
        from openai.lib._parsing._completions import ResponseFormatT

        params: tuple[Any, ...] = (ResponseFormatT, object)
    except ImportError:  # pragma: no cover - a later SDK moved it
        params = (object,)
    return tuple(
        generic[param]
        for param in params
        for generic in (ParsedChatCompletion, ParsedChoice, ParsedChatCompletionMessage)
    )


_HELD: contextvars.ContextVar[tuple[type, ...] | None] = contextvars.ContextVar(
    "criticloop_verdict_types", default=None
)


def warm_thread() -> None:
    """Ready this thread to invoke graphs whose nodes call crew judges: its context gets the
    SDK's verdict classes (:func:`verdict_types`), held as long as the context lives. Without
    it each judge call on 2 CPUs cost about 15 ms more CPU (``bench/scale.py``, judge alone:
    71-85 -> 42-52 ms of CPU a prompt). Tracked per context, as pydantic's cache is."""
    if _HELD.get() is None:
        _HELD.set(verdict_types())


def context_of(case: Case) -> str:
    """What the judge needs to know about the case, each user-supplied text neutralised."""
    parts = []
    turns = [f"{role}: {neutralize(text).text}" for role, text in case.conversation[-6:]]
    parts.append("Conversation so far:\n" + "\n".join(turns))
    if case.persona:
        parts.append(f"The assistant's persona: {neutralize(case.persona).text}")
    if case.brand:
        voice = case.voice
        lines = [f"Brand: {case.brand.get('name')}"]
        for key in ("description", "tone"):
            if voice.get(key):
                lines.append(f"Voice {key}: {voice[key]}")
        for key in ("preferred_terms", "banned_terms"):
            if voice.get(key):
                lines.append(f"{key.replace('_', ' ').capitalize()}: {', '.join(voice[key])}")
        parts.append("\n".join(lines))
    if case.campaign:
        c = case.campaign
        parts.append(
            f"Sponsored product: {c.get('product')}\nAd copy: {c.get('ad_copy')}\n"
            f"Keywords: {', '.join(c.get('keywords') or [])}"
        )
    policy = case.compliance
    if policy:
        rules = [
            f"{k.replace('_', ' ')}: {v}" for k, v in policy.items() if v not in (None, "", [])
        ]
        parts.append("Advertising policy:\n" + "\n".join(f"- {r}" for r in rules))
    text = "\n\n".join(parts)
    return text[-MAX_CONTEXT_CHARS:]


def _why(rationale: str, suspicious: bool) -> str:
    if suspicious:
        return (
            "the response addresses the judge (instruction-like text): a person must decide; "
            + rationale
        )
    return rationale


def _spent(llm: Any, before: tuple[int, int]) -> tuple[int, int]:
    """The tokens of the call that moved ``llm``'s running totals from ``before``."""
    after = _usage(llm)
    return after[0] - before[0], after[1] - before[1]


def _usage(llm: Any) -> tuple[int, int]:
    try:
        summary = llm.get_token_usage_summary()
        return summary.prompt_tokens, summary.completion_tokens
    except Exception:  # noqa: BLE001 - usage is a record, not the judgement
        return 0, 0


def _template(name: str) -> str:
    return (TEMPLATES / f"{name}.txt").read_text(encoding="utf-8").strip()


_QUIET = threading.Lock()
_quieted = False


def quiet_crewai() -> None:
    """CrewAI off the network and off stdout, once per process: telemetry and its trace prompt
    off, loggers muted, an in-process lock instead of its polling file lock (threads judge at
    once); whatever it stores goes to the data home (CREWAI_STORAGE_DIR, set by the settings)."""
    global _quieted
    with _QUIET:
        if _quieted:
            return
        import logging
        import os

        for name, value in (
            ("CREWAI_DISABLE_TELEMETRY", "true"),
            ("CREWAI_TRACING_ENABLED", "false"),
            ("OTEL_SDK_DISABLED", "true"),
            ("CREWAI_DISABLE_VERSION_CHECK", "true"),
        ):
            os.environ.setdefault(name, value)
        root = logging.getLogger()
        if not root.handlers:  # else CrewAI's logging.error() calls basicConfig on the root
            root.addHandler(logging.NullHandler())
        for handler in root.handlers:
            handler.addFilter(_DropCrewAIRecords())
        logging.getLogger("crewai").setLevel(logging.CRITICAL)
        logging.getLogger("crewai_core").setLevel(logging.CRITICAL)
        from crewai_core.lock_store import set_lock_backend

        set_lock_backend(_in_process_lock)
        _quieted = True


class _DropCrewAIRecords:
    """CrewAI's providers log failures on the root logger; the judge records them instead."""

    def filter(self, record: Any) -> bool:
        return not (record.name == "root" and "/crewai" in (record.pathname or ""))


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _in_process_lock(name: str, timeout: float = 120):
    import contextlib

    @contextlib.contextmanager
    def held():
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(name, threading.RLock())
        if not lock.acquire(timeout=timeout):
            raise TimeoutError(f"CrewAI lock {name!r}")
        try:
            yield
        finally:
            lock.release()

    return held()
