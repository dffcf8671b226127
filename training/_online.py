"""Reinforcement learning from the critics: PPO (``_ppo.py``), GRPO and RLOO (TRL).

The reward (``--reward``) is the feedback graph's by default (``critics``): the critics, the
profile's weights, vetoes as a penalty. ``rm:NAME`` uses a reward model instead (its score read
as P(preferred over a typical response), 0-1) and ``mix[:NAME]`` both, the model weighted by
``reward_mix``; NAME is ``trained`` (the active trained model), a trained version, or a
``[reward_models]`` table of the profile.
For PPO it is one number per response. For GRPO and RLOO every critic is its own TRL
``reward_func`` (so TRL logs each dimension) with the profile's weights as ``reward_weights``
(averaged over the training prompts' task profiles, since TRL takes one weight per function),
plus a ``veto`` function worth ``veto_penalty`` when a hard rule is broken. A critic that does not
judge a prompt's task returns None, which TRL leaves out of that response's sum.

GRPO and RLOO run under ``accelerate launch`` across GPUs (TRL is rank-aware) and, with
``use_vllm``, generate with a vLLM server (``trl vllm-serve``) that TRL keeps in step with the
policy's weights. PPO runs on one GPU (``_ppo.py``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import Store
from ._config import TrainConfig
from ._data import policy_conversation
from ._dpo import fit, load_base, lora_config, peak_memory_mb, trainer_args
from ._judge import CriticJudge, ModelReward, parse_reward

LogFn = Callable[[dict[str, Any]], None]


def run_online(config: TrainConfig, prompt_ids: list[str], log: LogFn) -> dict[str, Any]:
    """Train with PPO, GRPO or RLOO; the judge's settings are the job's (config.json), not
    the worker's environment."""
    settings = config.settings()
    training = config.training
    judge = CriticJudge(settings, veto_penalty=training.veto_penalty)
    weight, name = parse_reward(training.reward)
    model = ModelReward.named(settings, name, judge) if name else None
    rm_weight = training.reward_mix if weight < 0 else weight
    with Store.open(settings.db_path, create=False) as store:
        conversations = [policy_conversation(store, pid) for pid in prompt_ids]
    mixed = Mixed(judge, model, rm_weight)
    if config.method == "ppo":
        metrics = run_ppo(config, prompt_ids, conversations, mixed, log)
    else:
        metrics = run_trl_online(config, prompt_ids, conversations, mixed, log)
    return {**metrics, "reward": training.reward, **mixed.describe()}


class Mixed:
    """The RL reward: the critics' (with the veto penalty), a reward model's, or
    ``(1 - w) * critics + w * model``."""

    def __init__(self, judge: CriticJudge, model: ModelReward | None, weight: float):
        self.judge, self.model = judge, model
        self.weight = weight if model is not None else 0.0

    def describe(self) -> dict[str, Any]:
        if self.model is None:
            return {"reward_model": None}
        return {"reward_model": self.model.version, "reward_model_weight": self.weight}

    def scalars(self, prompt_id: str, texts: list[str]) -> list[float]:
        out = [0.0] * len(texts)
        if self.weight < 1:
            for i, reward in enumerate(self.judge.rewards(prompt_id, texts)):
                out[i] = (1 - self.weight) * self.judge.scalar(reward)
        if self.model is not None and self.weight > 0:
            for i, value in enumerate(self.model.rewards(prompt_id, texts)):
                out[i] += self.weight * value
        return out


def run_ppo(
    config: TrainConfig, prompt_ids, conversations, mixed: Mixed, log: LogFn
) -> dict[str, Any]:
    from peft import get_peft_model

    from ._ppo import PPOSettings, train_ppo

    model, tokenizer = load_base(config)
    model = get_peft_model(model, lora_config(config)).to(config.device)
    budget = max(16, config.training.max_length - config.training.rl_max_new_tokens)
    prompts = [_encode(tokenizer, conversation)[-budget:] for conversation in conversations]

    def reward_fn(indices: list[int], responses: list[str]) -> list[float]:
        by_prompt: dict[int, list[int]] = defaultdict(list)
        for position, index in enumerate(indices):
            by_prompt[index].append(position)
        out = [0.0] * len(responses)
        for index, positions in by_prompt.items():
            texts = [responses[p] for p in positions]
            for p, value in zip(positions, mixed.scalars(prompt_ids[index], texts), strict=True):
                out[p] = value
        return out

    ppo = PPOSettings.from_config(config)
    began = time.perf_counter()
    history = train_ppo(
        model, tokenizer, prompts, reward_fn, ppo, Path(config.output_dir) / "adapter", on_step=log
    )
    first, last = history[0], history[-1]
    return {
        "steps": len(history),
        "reward_first": round(first["reward_mean"], 4),
        "reward_last": round(last["reward_mean"], 4),
        "kl_last": round(last["kl"], 4),
        "seconds": round(time.perf_counter() - began, 2),
        "peak_memory_mb": peak_memory_mb(),
    }


def reward_functions(mixed: Mixed, prompt_ids: list[str]) -> tuple[list, list[float]]:
    """One TRL reward function per critic with its averaged profile weight, plus vetoes, times
    ``1 - w``; and the reward model's function with weight ``w`` (alone: only it)."""
    judge = mixed.judge
    funcs, weights = ([], []) if mixed.weight >= 1 else _critic_functions(judge, prompt_ids)
    weights = [w * (1 - mixed.weight) for w in weights]
    if mixed.model is not None and mixed.weight > 0:
        model = mixed.model

        def reward_model(prompts, completions, **kwargs) -> list[float]:
            texts = [_completion_text(c) for c in completions]
            out = []
            for pid, text in zip(kwargs["prompt_id"], texts, strict=True):
                out.append(model.rewards(pid, [text])[0])
            return out

        funcs.append(reward_model)
        weights.append(mixed.weight)
    return funcs, weights


def _critic_functions(judge: CriticJudge, prompt_ids: list[str]) -> tuple[list, list[float]]:
    totals: dict[str, float] = defaultdict(float)
    for pid in prompt_ids:
        weights = judge.weights(pid)
        norm = sum(w for w in weights.values() if w > 0) or 1.0
        for name, weight in weights.items():
            if weight > 0:
                totals[name] += weight / norm / len(prompt_ids)
    names = sorted(totals)

    def rewards_of(kwargs: dict[str, Any], completions: list) -> list:
        texts = [_completion_text(c) for c in completions]
        out = []
        for pid, text in zip(kwargs["prompt_id"], texts, strict=True):
            out.append(judge.rewards(pid, [text])[0])
        return out

    def critic_reward(name: str):
        def reward(prompts, completions, **kwargs) -> list[float | None]:
            return [
                r.vector.get(name) if judge.weights(pid).get(name, 0) > 0 else None
                for pid, r in zip(kwargs["prompt_id"], rewards_of(kwargs, completions), strict=True)
            ]

        reward.__name__ = name
        return reward

    def veto(prompts, completions, **kwargs) -> list[float]:
        return [judge.veto_penalty if r.vetoed else 0.0 for r in rewards_of(kwargs, completions)]

    return [*(critic_reward(n) for n in names), veto], [*(totals[n] for n in names), 1.0]


def run_trl_online(
    config: TrainConfig, prompt_ids, conversations, mixed: Mixed, log: LogFn
) -> dict[str, Any]:
    from datasets import Dataset

    if config.method == "grpo":
        from trl import GRPOConfig as Args
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Args
        from trl import RLOOTrainer as Trainer
    funcs, weights = reward_functions(mixed, prompt_ids)
    # Before the model loads: under DeepSpeed ZeRO-3 (the zero3 preset) the arguments make
    # from_pretrained load the weights sharded across the GPUs, not whole on every rank.
    args = online_args(config, Args, weights)
    model, tokenizer = load_base(config)
    dataset = Dataset.from_list(
        [{"prompt": c, "prompt_id": pid} for pid, c in zip(prompt_ids, conversations, strict=True)]
    )
    trainer = Trainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    _, resumed_from, seconds = fit(trainer, config, log)
    steps = [h for h in trainer.state.log_history if "reward" in h]
    return {
        "steps": trainer.state.global_step,
        "resumed_from": resumed_from,
        "reward_first": steps[0]["reward"] if steps else None,
        "reward_last": steps[-1]["reward"] if steps else None,
        "reward_weights": dict(zip([f.__name__ for f in funcs], weights, strict=True)),
        "seconds": round(seconds, 2),
        "peak_memory_mb": peak_memory_mb(),
    }


def online_args(config: TrainConfig, args_class: type, reward_weights: list[float]) -> Any:
    """GRPO's or RLOO's TRL config: the shared arguments, the RL knobs, and with ``use_vllm``
    TRL's server mode (the launching process checked that the server answers)."""
    training = config.training
    generations = training.rl_samples_per_prompt
    vllm = {}
    if training.use_vllm:
        vllm = {
            "use_vllm": True,
            "vllm_mode": "server",
            "vllm_server_base_url": training.vllm_server_base_url,
            "vllm_server_timeout": training.vllm_server_timeout,
        }
    return trainer_args(
        replace_steps(config),
        args_class,
        per_device_train_batch_size=training.batch_size * generations,
        num_generations=generations,
        max_completion_length=training.rl_max_new_tokens,
        temperature=config.temperature,
        beta=training.kl_coef,
        reward_weights=reward_weights,
        **vllm,
    )


def replace_steps(config: TrainConfig) -> TrainConfig:
    """RL methods count optimisation steps in ``rl_steps``, not epochs over the prompts."""
    return config.with_training(max_steps=config.training.rl_steps)


def _encode(tokenizer, conversation: list[dict[str, str]]) -> list[int]:
    ids = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def _completion_text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return str(completion)
