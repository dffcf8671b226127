"""The batch generation job behind ``criticloop generate``: N prompts x K candidates.

Candidates are recorded after every batch under a key of (prompt, generation config, index),
so a run that is killed loses at most the batch in flight, and running the same command again
generates only what is missing. A new ``--seed`` (or model, or sampling setting) is a new
config and gives new candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..agents import (
    BatchStats,
    Candidate,
    Policy,
    Sampling,
    build_conversation,
    open_policy,
    policy_ref,
)
from ..progress import progress as show_progress
from ..settings import Settings
from ..store import GenerationRecord, Store, content_hash


@dataclass
class GenerateSummary:
    run_id: str | None
    model: str
    prompts: int
    candidates_per_prompt: int
    generated: int = 0
    already_present: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    by_task_type: dict[str, int] = field(default_factory=dict)
    finish_reasons: dict[str, int] = field(default_factory=dict)
    database: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generation_seconds if self.generation_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 1)}


def generation_config_hash(
    model_name: str, adapter: str | None, sampling: Sampling, max_prompt_tokens: int
) -> str:
    """Identity of "the same generation settings": same hash, same candidate rows."""
    return content_hash(
        {
            "model": model_name,
            "adapter": adapter,
            "sampling": sampling.as_dict(),
            "max_prompt_tokens": max_prompt_tokens,
        }
    )[:16]


def missing_requests(
    store: Store, prompts: Sequence[dict[str, Any]], config_hash: str, candidates: int
) -> tuple[list[tuple[str, list[dict[str, str]], list[int]]], int]:
    """Generation requests for the candidates not stored yet under ``config_hash``, and how
    many are already there."""
    requests, present = [], 0
    for prompt in prompts:
        done = store.completed_candidates(prompt["id"], config_hash)
        missing = [i for i in range(candidates) if i not in done]
        present += candidates - len(missing)
        if missing:
            brand, campaign = store.brand_and_campaign(prompt)
            requests.append((prompt["id"], build_conversation(prompt, brand, campaign), missing))
    return requests, present


def generate_and_record(
    store: Store,
    policy: Policy,
    requests: Sequence[tuple[str, list[dict[str, str]], Sequence[int]]],
    *,
    sampling: Sampling,
    config_hash: str,
    batch_size: int,
    run_id: str | None,
    on_batch: Callable[[BatchStats], None] | None = None,
) -> Iterator[list[Candidate]]:
    """Sample the requested candidates, recording each batch before yielding it."""
    for batch in policy.generate(requests, sampling, batch_size, on_batch=on_batch):
        store.record_generations(
            GenerationRecord(
                prompt_id=c.key,
                config_hash=config_hash,
                candidate_index=c.index,
                text=c.text,
                model=policy.ref.name,
                adapter_version=policy.adapter_version,
                sampling=sampling.as_dict(),
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                finish_reason=c.finish_reason,
                run_id=run_id,
            )
            for c in batch
        )
        yield batch


def run_generate(
    settings: Settings,
    store: Store,
    *,
    prompt_ids: Sequence[str] = (),
    task_types: Sequence[str] = (),
    limit: int | None = None,
    candidates: int,
    sampling: Sampling,
    batch_size: int,
    progress: bool = True,
) -> GenerateSummary:
    if prompt_ids:
        prompts = [store.get_prompt(pid) for pid in prompt_ids]
    else:
        prompts = store.list_prompts(task_types=task_types, limit=limit)
    ref = policy_ref(settings, convert=not settings.policy.base_url)
    config_hash = generation_config_hash(
        ref.name, None, sampling, settings.generation.max_prompt_tokens
    )
    summary = GenerateSummary(
        run_id=None,
        model=ref.name,
        prompts=len(prompts),
        candidates_per_prompt=candidates,
        database=str(store.path),
    )
    requests, summary.already_present = missing_requests(store, prompts, config_hash, candidates)
    if not requests:
        return summary

    task_of = {p["id"]: p["task_type"] for p in prompts}
    config = {
        "model": ref.name,
        "model_source": ref.source,
        "config_hash": config_hash,
        "sampling": sampling.as_dict(),
        "candidates": candidates,
        "batch_size": batch_size,
        "prompts": [pid for pid, _, _ in requests],
    }
    summary.run_id = store.start_run("generate", config)
    status = "failed"
    try:
        policy = open_policy(settings, ref)
        total = sum(len(indices) for _, _, indices in requests)
        bar = show_progress(total, progress, "generating", "cand")

        def on_batch(stats: BatchStats) -> None:
            summary.completion_tokens += stats.completion_tokens
            summary.generation_seconds += stats.seconds
            bar.update(stats.sequences)
            bar.set_postfix(tok_s=f"{summary.tokens_per_second:.0f}")

        for batch in generate_and_record(
            store,
            policy,
            requests,
            sampling=sampling,
            config_hash=config_hash,
            batch_size=batch_size,
            run_id=summary.run_id,
            on_batch=on_batch,
        ):
            for c in batch:
                summary.generated += 1
                task = task_of[c.key]
                summary.by_task_type[task] = summary.by_task_type.get(task, 0) + 1
                summary.finish_reasons[c.finish_reason] = (
                    summary.finish_reasons.get(c.finish_reason, 0) + 1
                )
        bar.close()
        status = "done"
    finally:
        store.finish_run(summary.run_id, status, summary.as_dict())
    return summary
