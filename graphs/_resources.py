"""What the feedback graph's runs work with: :func:`make_resources` (the models, critics and
store of ``graph run``, ``feedback revise`` and the reviewer), and which failures are one
prompt's rather than the run's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from ..agents import Critic, Sampling, load_embedder, open_policy, policy_ref
from ..errors import CriticloopError
from ..reward import Profiles, build_critics
from ..settings import Settings
from ..store import Store
from ._generate import generation_config_hash
from .feedback import FeedbackResources, ThreadStores


def make_resources(
    settings: Settings,
    stores: ThreadStores,
    profiles: Profiles,
    sampling: Sampling,
    candidates: int,
    *,
    critics: dict[str, Critic] | None = None,
    load_policy: Callable[[], Any] | None = None,
    load_embedder_fn: Callable[[], Any] | None = None,
    load_teacher: Callable[[], Any] | None = None,
) -> FeedbackResources:
    ref = policy_ref(settings, convert=False)  # the name; the model is converted when loaded
    adapter = None
    if settings.db_path.exists():
        with Store.open(settings.db_path, create=False) as store:
            adapter = store.promoted_adapter(ref.name)
    version = adapter["version"] if adapter else None
    teacher = settings.teacher
    writes_candidates = teacher.model and teacher.role in ("candidates", "both")
    writer_name = f"teacher:{teacher.model}" if writes_candidates else ref.name
    config_hash = generation_config_hash(
        writer_name, version, sampling, settings.generation.max_prompt_tokens
    )

    def policy_with_adapter() -> Any:
        policy = open_policy(settings)
        if adapter:
            policy.load_adapter(adapter["path"], adapter["version"])
        return policy

    def judge_policy() -> Any:  # the base model judges, never the adapter being served
        return resources.policy() if adapter is None else open_policy(settings)

    resources = FeedbackResources(
        settings=settings,
        stores=stores,
        profiles=profiles,
        critics=critics if critics is not None else build_critics(profiles, settings, judge_policy),
        sampling=sampling,
        candidates=candidates,
        config_hash=config_hash,
        load_policy=load_policy or policy_with_adapter,
        load_embedder=load_embedder_fn or (lambda: load_embedder(settings)),
        load_teacher=load_teacher or (_teacher_loader(settings) if teacher.model else None),
        teacher_role=teacher.role,
        adapter_version=version,
    )
    return resources


def _teacher_loader(settings: Settings) -> Callable[[], Any]:
    def load() -> Any:
        from ..agents import Teacher

        return Teacher(settings.teacher)

    return load


def _prompt_fault(exc: BaseException) -> bool:
    """Whether an exception is about one prompt (quarantine it, go on) rather than the run (a
    model that cannot load, a database that cannot be written: stop, the next run continues)."""
    return isinstance(exc, Exception) and not isinstance(exc, CriticloopError | sqlite3.Error)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".strip()
