"""PPO for a LoRA policy with a value head: rollouts, GAE and clipped policy/value updates.

TRL 1.16 removed PPOTrainer, so this follows the old one and "The N Implementation Details of
RLHF with PPO" (Huang et al., 2022): a per-token KL penalty against the reference model (the
same PEFT model with its adapter disabled), the scalar score added at the last response token,
GAE, whitened advantages, clipped policy and value losses and an entropy bonus. ``train_ppo``
checkpoints after every iteration and resumes from the last complete checkpoint.

It runs in one process on one device: it has no Accelerator, so under ``accelerate launch``
every rank would train its own copy on the same device and rename the same checkpoint folders.
``criticloop train`` refuses that before the job starts and the worker refuses it again
(:func:`check_one_process`); GRPO and RLOO (TRL) train across several GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ._config import TrainConfig

STATE_DIR = "ppo_state"
VALUE_HEAD_FILE = "value_head.safetensors"
METRIC_KEYS = (
    "step",
    "reward_mean",
    "reward_std",
    "kl",
    "policy_loss",
    "value_loss",
    "entropy",
    "clip_fraction",
    "value_clip_fraction",
    "approx_kl",
    "response_length",
    "rollout_seconds",
    "update_seconds",
    "seconds",
)
_UPDATE_KEYS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "clip_fraction",
    "value_clip_fraction",
    "approx_kl",
)


@dataclass(frozen=True)
class PPOSettings:
    """One PPO run. The knobs PPO shares with the other methods have no default here: a job
    takes them from its config (:meth:`from_config`, whose defaults are ``TrainingSettings``');
    the rest are PPO's own."""

    # Shared with GRPO/RLOO and the training settings.
    steps: int  # PPO iterations (rollout + update)
    prompts_per_step: int  # prompts sampled per iteration
    samples_per_prompt: int
    max_new_tokens: int
    temperature: float
    learning_rate: float  # LoRA and value head
    kl_coef: float  # per-token KL penalty against the reference (adapter disabled)
    seed: int
    # PPO's own.
    top_p: float = 1.0
    ppo_epochs: int = 2  # optimisation passes over each rollout batch
    minibatch_size: int = 4  # sequences per optimiser step
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    value_clip_range: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 1.0
    whiten_advantages: bool = True

    @classmethod
    def from_config(cls, config: TrainConfig, **own: Any) -> PPOSettings:
        """The job's PPO settings: the shared knobs from its config, ``own`` for PPO's own."""
        training = config.training
        return cls(
            steps=training.rl_steps,
            prompts_per_step=training.batch_size,
            samples_per_prompt=training.rl_samples_per_prompt,
            max_new_tokens=training.rl_max_new_tokens,
            temperature=config.temperature,
            learning_rate=training.learning_rate,
            kl_coef=training.kl_coef,
            seed=training.seed,
            **own,
        )


ONE_GPU = (
    "PPO runs on one GPU: use --launcher subprocess, or --method grpo or rloo (TRL) to train "
    "across several"
)


def check_one_process(environ: dict[str, str] | None = None) -> None:
    """Raise InputError when this process is one of several ranks (``WORLD_SIZE`` > 1, as
    ``accelerate launch`` and ``torchrun`` set it): PPO here would corrupt its checkpoints."""
    world = int((os.environ if environ is None else environ).get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise InputError(f"{ONE_GPU} (this worker is one of {world} processes)")


# ---- losses and advantage estimation -------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum()


def masked_whiten(x: Tensor, mask: Tensor) -> Tensor:
    """Zero mean, unit (population) variance over the masked entries; 0 elsewhere."""
    import torch

    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """(advantages, returns) for per-token rewards and values [B, T].

    ``mask`` is 1 on response tokens, right-padded and contiguous from position 0. The value
    after the last response token is 0 (the episode ends there); padded positions give 0.
    """
    import torch

    # Zeroing the padding makes the bootstrap value past the last token 0 and keeps the running
    # estimate at 0 through the right padding, so one backward sweep serves every row.
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[1]
    running = torch.zeros_like(rewards[:, 0])
    reversed_advantages = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1) * mask
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate loss and the fraction of tokens where the clipped term was active."""
    import torch

    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss and the fraction of tokens where the clipped term was active."""
    import torch

    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def make_value_head(hidden_size: int) -> torch.nn.Linear:
    """The value head: a linear map from the policy's last hidden state to a scalar.

    Zero-initialised so the first value estimates are 0 rather than noise on the reward scale.
    """
    import torch

    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


# ---- rollouts -------------------------------------------------------------------------------------


@dataclass
class _Rollout:
    """One iteration's batch; every field is indexed by sequence first."""

    query: Tensor  # [B, P] prompt ids, left-padded
    query_mask: Tensor  # [B, P]
    response: Tensor  # [B, T] response ids, right-padded
    mask: Tensor  # [B, T] float, 1 on response tokens
    old_logprobs: Tensor
    old_values: Tensor
    advantages: Tensor
    returns: Tensor

    def rows(self, index: Tensor) -> _Rollout:
        return _Rollout(*(getattr(self, f.name)[index] for f in fields(self)))


def _left_pad(prompts: list[list[int]], pad_id: int, device: Any) -> tuple[Tensor, Tensor]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention[row, width - len(prompt) :] = 1
    return ids.to(device), attention.to(device)


def _cut_at_eos(response: Tensor, eos_ids: list[int], pad_id: int) -> tuple[Tensor, Tensor]:
    """Each response through its first eos (kept, so the policy learns when to stop); the rest
    becomes padding. Returns (response, float mask)."""
    import torch

    is_eos = torch.isin(response, torch.tensor(eos_ids, device=response.device))
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return response.masked_fill(after_eos, pad_id), (~after_eos).float()


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _forward(
    model: Any,
    query: Tensor,
    query_mask: Tensor,
    response: Tensor,
    mask: Tensor,
    temperature: float,
    value_head: torch.nn.Module | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Temperature-scaled logits [B, T, V] at the positions that predict each response token,
    and the value head's estimates there when a head is given."""
    import torch

    ids = torch.cat([query, response], dim=1)
    attention = torch.cat([query_mask, mask.long()], dim=1)
    # Left padding shifts every prompt; positions count real tokens only, as generate() does.
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=attention,
        position_ids=positions,
        output_hidden_states=value_head is not None,
        use_cache=False,
    )
    start = query.shape[1] - 1
    logits = out.logits[:, start:-1].float() / temperature
    if value_head is None:
        return logits, None
    hidden = out.hidden_states[-1][:, start:-1].to(value_head.weight.dtype)
    return logits, value_head(hidden).squeeze(-1)


def _token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _entropy(logits: Tensor) -> Tensor:
    return logits.logsumexp(-1) - (logits.softmax(-1) * logits).sum(-1)


def _rollout(
    model: Any,
    tokenizer: Any,
    value_head: torch.nn.Module,
    prompts: list[list[int]],
    indices: list[int],
    reward_fn: Callable[[list[int], list[str]], list[float]],
    settings: PPOSettings,
) -> tuple[_Rollout, dict[str, float]]:
    import torch

    device = value_head.weight.device
    pad_id = tokenizer.pad_token_id
    eos_ids = _eos_ids(model, tokenizer)
    query, query_mask = _left_pad([prompts[i] for i in indices], pad_id, device)
    with torch.no_grad():
        generated = model.generate(
            input_ids=query,
            attention_mask=query_mask,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            # Sample from the distribution whose log-probabilities PPO scores, not the
            # global default top-k of 50.
            top_k=0,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_ids,
        )
        response, mask = _cut_at_eos(generated[:, query.shape[1] :], eos_ids, pad_id)
        texts = [
            tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
            for row, n in zip(response, mask.sum(1), strict=True)
        ]
        scores = reward_fn(indices, texts)
        if len(scores) != len(texts):
            raise ValueError(f"reward_fn gave {len(scores)} scores for {len(texts)} responses")
        score = torch.tensor(scores, dtype=torch.float32, device=device)

        logits, values = _forward(
            model, query, query_mask, response, mask, settings.temperature, value_head
        )
        old_logprobs = _token_logprobs(logits, response) * mask
        with model.disable_adapter():
            ref_logits, _ = _forward(model, query, query_mask, response, mask, settings.temperature)
        ref_logprobs = _token_logprobs(ref_logits, response) * mask
        values = values * mask

        kl = old_logprobs - ref_logprobs
        rewards = -settings.kl_coef * kl
        last = mask.sum(1).long() - 1
        rewards[torch.arange(len(texts), device=device), last] += score
        advantages, returns = gae(rewards, values, mask, settings.gamma, settings.lam)
        if settings.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

    batch = _Rollout(query, query_mask, response, mask, old_logprobs, values, advantages, returns)
    metrics = {
        "reward_mean": score.mean().item(),
        "reward_std": score.std(correction=0).item(),
        "kl": kl.sum(1).mean().item(),
        "response_length": mask.sum(1).mean().item(),
    }
    return batch, metrics


# ---- optimisation ---------------------------------------------------------------------------------


def _update(
    model: Any,
    value_head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: _Rollout,
    settings: PPOSettings,
    generator: torch.Generator,
    step: int,
) -> dict[str, float]:
    """ppo_epochs passes of shuffled minibatches; returns the mean of each loss statistic."""
    import torch

    totals = dict.fromkeys(_UPDATE_KEYS, 0.0)
    count = 0
    size = batch.query.shape[0]
    for _ in range(settings.ppo_epochs):
        order = torch.randperm(size, generator=generator).to(batch.query.device)
        for start in range(0, size, settings.minibatch_size):
            mb = batch.rows(order[start : start + settings.minibatch_size])
            logits, values = _forward(
                model,
                mb.query,
                mb.query_mask,
                mb.response,
                mb.mask,
                settings.temperature,
                value_head,
            )
            logprobs = _token_logprobs(logits, mb.response)
            pg_loss, clip_fraction = policy_loss(
                logprobs, mb.old_logprobs, mb.advantages, mb.mask, settings.clip_range
            )
            vf_loss, value_clip_fraction = value_loss(
                values, mb.old_values, mb.returns, mb.mask, settings.value_clip_range
            )
            entropy = masked_mean(_entropy(logits), mb.mask)
            loss = pg_loss + settings.value_coef * vf_loss - settings.entropy_coef * entropy
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became NaN at PPO step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()

            approx_kl = 0.5 * masked_mean((logprobs.detach() - mb.old_logprobs) ** 2, mb.mask)
            for key, value in zip(
                _UPDATE_KEYS,
                (pg_loss, vf_loss, entropy, clip_fraction, value_clip_fraction, approx_kl),
                strict=True,
            ):
                totals[key] += value.item()
            count += 1
    return {key: total / count for key, total in totals.items()}


def _sample_indices(n_prompts: int, settings: PPOSettings, generator: torch.Generator) -> list[int]:
    import torch

    # Without replacement while there are enough prompts; cycles through them otherwise.
    order = torch.randperm(n_prompts, generator=generator)
    chosen = order[torch.arange(settings.prompts_per_step) % n_prompts].tolist()
    return [i for i in chosen for _ in range(settings.samples_per_prompt)]


# ---- checkpoints ----------------------------------------------------------------------------------


def _checkpoints(state_root: Path) -> list[Path]:
    return sorted(state_root.glob("step-*")) if state_root.is_dir() else []


def _save_state(
    state_root: Path,
    step: int,
    model: Any,
    value_head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> None:
    """Write the step's state beside the previous one and rename it into place, so a kill at any
    moment leaves at least one complete checkpoint."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    name = f"step-{step:06d}"
    partial = state_root / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    adapter = get_peft_model_state_dict(model, adapter_name=model.active_adapter)
    save_file(
        {k: v.detach().contiguous() for k, v in adapter.items()}, partial / "adapter.safetensors"
    )
    save_file(value_head.state_dict(), partial / VALUE_HEAD_FILE)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng}, partial / "optimizer.pt")
    (partial / "state.json").write_text(json.dumps({"step": step, "metrics": history}))
    partial.rename(state_root / name)
    for older in _checkpoints(state_root)[:-1]:
        shutil.rmtree(older)


def _load_state(
    state_root: Path, model: Any, value_head: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, float]]]:
    """Restore the latest checkpoint; returns (its step, metrics so far), or (0, []) if none."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    found = _checkpoints(state_root)
    if not found:
        return 0, []
    latest = found[-1]
    device = value_head.weight.device
    set_peft_model_state_dict(
        model,
        load_file(latest / "adapter.safetensors", device=str(device)),
        adapter_name=model.active_adapter,
    )
    value_head.load_state_dict(load_file(latest / VALUE_HEAD_FILE, device=str(device)))
    saved = torch.load(latest / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    state = json.loads((latest / "state.json").read_text())
    return state["step"], state["metrics"]


# ---- the loop -------------------------------------------------------------------------------------


def train_ppo(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    reward_fn: Callable[[list[int], list[str]], list[float]],
    settings: PPOSettings,
    output_dir: Path,
    on_step: Callable[[dict[str, float]], None] | None = None,
    resume: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` (a PeftModel with a trainable LoRA adapter) with PPO on ``prompts``.

    ``prompts`` are chat-templated token ids; ``reward_fn(indices, responses)`` scores decoded
    responses. Saves the adapter and ``value_head.safetensors`` into ``output_dir`` and returns
    the metrics of every step. With ``resume``, continues an interrupted run from
    ``output_dir/ppo_state``. Raises FloatingPointError if a loss becomes non-finite.
    """
    import torch
    from safetensors.torch import save_file

    check_one_process()
    output_dir = Path(output_dir)
    state_root = output_dir / STATE_DIR
    if not resume:
        shutil.rmtree(state_root, ignore_errors=True)
    device = next(model.parameters()).device
    value_head = make_value_head(model.config.get_text_config().hidden_size).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    done, history = _load_state(state_root, model, value_head, optimizer)
    if done == 0:
        torch.manual_seed(settings.seed)  # sampling in generate() draws from the global RNG

    was_training = model.training
    # Dropout off: it would make the first ratio differ from 1 and bias the clipped objective.
    model.eval()
    try:
        for step in range(done + 1, settings.steps + 1):
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
            indices = _sample_indices(len(prompts), settings, generator)
            batch, metrics = _rollout(
                model, tokenizer, value_head, prompts, indices, reward_fn, settings
            )
            rolled_out = time.perf_counter()
            metrics |= _update(
                model, value_head, optimizer, params, batch, settings, generator, step
            )
            finished = time.perf_counter()
            metrics |= {
                "step": float(step),
                "rollout_seconds": rolled_out - started,
                "update_seconds": finished - rolled_out,
                "seconds": finished - started,
            }
            metrics = {key: float(metrics[key]) for key in METRIC_KEYS}
            history.append(metrics)
            # Saved before on_step so a caller that stops the run there loses nothing.
            _save_state(state_root, step, model, value_head, optimizer, history)
            if on_step is not None:
                on_step(metrics)
    finally:
        model.train(was_training)

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    save_file(value_head.state_dict(), output_dir / VALUE_HEAD_FILE)
    shutil.rmtree(state_root, ignore_errors=True)
    return history
