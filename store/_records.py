"""Typed records: what users import (brands, campaigns, prompts) and what jobs record.

Import records forbid unknown fields so a typo in a user's file is an error, not silent loss.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..vocab import TASK_TYPES

TaskType = Literal[TASK_TYPES]

SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def content_hash(payload: Any) -> str:
    """Stable hash of JSON-able content: the natural key of things users don't name."""
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BrandVoice(_Strict):
    description: str = ""
    tone: str = Field("", description="Target tone, e.g. 'warm, plain-spoken'.")
    preferred_terms: list[str] = Field(default_factory=list)
    banned_terms: list[str] = Field(default_factory=list)
    exemplars: list[str] = Field(default_factory=list, description="Texts in the brand's voice.")


class CompliancePolicy(_Strict):
    required_disclosure: str | None = Field(
        None, description="Label an ad must carry, e.g. 'Sponsored'."
    )
    banned_claims: list[str] = Field(default_factory=list)
    competitors: list[str] = Field(default_factory=list, description="Never disparage these.")
    forbid_personal_data: bool = True
    notes: str = ""


class Brand(_Strict):
    kind: Literal["brand"] = "brand"
    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    voice: BrandVoice = Field(default_factory=BrandVoice)
    compliance: CompliancePolicy = Field(default_factory=CompliancePolicy)


class Campaign(_Strict):
    kind: Literal["campaign"] = "campaign"
    id: str = Field(pattern=SLUG)
    brand: str = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    product: str = Field(min_length=1)
    ad_copy: str = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    compliance: CompliancePolicy = Field(
        default_factory=CompliancePolicy,
        description="Rules added to the brand's for this campaign.",
    )


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class Prompt(_Strict):
    """A prompt: a conversation that ends with the user's turn, plus its context."""

    kind: Literal["prompt"] = "prompt"
    id: str | None = Field(None, pattern=SLUG)
    task_type: TaskType = "general"
    prompt: str | None = Field(None, description="Shorthand for a one-turn conversation.")
    messages: list[Message] = Field(default_factory=list)
    persona: str | None = None
    brand: str | None = Field(None, pattern=SLUG)
    campaign: str | None = Field(None, pattern=SLUG)
    metadata: dict[str, Any] = Field(default_factory=dict)
    candidates: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Responses to judge instead of sampling the policy (e.g. your model's).",
    )

    @model_validator(mode="after")
    def _one_conversation(self) -> Prompt:
        if self.prompt and self.messages:
            raise ValueError("give either 'prompt' or 'messages', not both")
        if self.prompt:
            self.messages = [Message(role="user", content=self.prompt)]
            self.prompt = None
        if not self.messages:
            raise ValueError("a prompt needs 'prompt' text or 'messages'")
        if self.messages[-1].role != "user":
            raise ValueError("'messages' must end with a user turn")
        if self.task_type == "ad_insertion" and not self.campaign:
            raise ValueError("an ad_insertion prompt needs a 'campaign'")
        if self.task_type == "persona_chat" and not self.persona:
            raise ValueError("a persona_chat prompt needs a 'persona'")
        if any(not c.strip() for c in self.candidates):
            raise ValueError("'candidates' must not hold empty responses")
        return self

    @field_validator("persona")
    @classmethod
    def _blank_persona_is_none(cls, value: str | None) -> str | None:
        return value or None

    def conversation(self) -> list[dict[str, str]]:
        return [m.model_dump() for m in self.messages]

    def natural_key(self) -> str:
        """The user's id, else a hash of everything that makes this prompt what it is."""
        if self.id:
            return self.id
        return "p-" + self.content_hash()[:16]

    def content_hash(self) -> str:
        return content_hash(self.model_dump(exclude={"id", "kind", "prompt"}))


ImportRecord = Brand | Campaign | Prompt
