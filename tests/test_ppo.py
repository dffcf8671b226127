"""PPO: the loss arithmetic against hand-computed values, then short real runs of a tiny
random Llama with a LoRA adapter (the bundled SmolLM2 tokenizer), including resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from criticloop.training._ppo import (
    METRIC_KEYS,
    STATE_DIR,
    PPOSettings,
    _cut_at_eos,
    gae,
    masked_whiten,
    policy_loss,
    train_ppo,
    value_loss,
)
from torch.testing import assert_close


def test_gae_matches_hand_computation_and_zeroes_padding():
    # gamma=1, lam=0.95; delta_t = r_t + V_{t+1} - V_t with V after the last token = 0.
    # Row 0, values [0.5, 0.6, 0.7], rewards [0, 0, 1]:
    #   t=2: delta = 1 - 0.7 = 0.3                A2 = 0.3
    #   t=1: delta = 0.7 - 0.6 = 0.1              A1 = 0.1 + 0.95 * 0.3   = 0.385
    #   t=0: delta = 0.6 - 0.5 = 0.1              A0 = 0.1 + 0.95 * 0.385 = 0.46575
    #   returns = A + V = [0.96575, 0.985, 1.0]
    # Row 1, two tokens then padding (junk 9.0 there must be ignored), rewards [0, 1]:
    #   t=1: delta = 1 - 0.6 = 0.4                A1 = 0.4
    #   t=0: delta = 0.6 - 0.5 = 0.1              A0 = 0.1 + 0.95 * 0.4 = 0.48
    #   returns = [0.98, 1.0, 0]
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])

    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)

    assert_close(advantages, torch.tensor([[0.46575, 0.385, 0.3], [0.48, 0.4, 0.0]]))
    assert_close(returns, torch.tensor([[0.96575, 0.985, 1.0], [0.98, 1.0, 0.0]]))


def test_policy_loss_clips_known_ratios():
    # eps = 0.2; per token max(-A*r, -A*clip(r)):
    #   r=1.5, A=+1: max(-1.5, -1.2) = -1.2  clipped term active
    #   r=0.5, A=+1: max(-0.5, -0.8) = -0.5
    #   r=1.5, A=-1: max( 1.5,  1.2) =  1.5
    #   r=0.5, A=-1: max( 0.5,  0.8) =  0.8  clipped term active
    # loss = (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.15; clip fraction = 2/4. The fifth token is masked.
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5, 3.0]])
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])

    loss, clip_fraction = policy_loss(
        ratios.log(), torch.zeros_like(ratios), advantages, mask, clip_range=0.2
    )

    assert_close(loss, torch.tensor(0.15))
    assert_close(clip_fraction, torch.tensor(0.5))


def test_value_loss_clips_known_values():
    # old values 0, returns 1, eps = 0.2; per token max((v-R)^2, (clip(v)-R)^2):
    #   v= 0.5 -> clipped to  0.2: max(0.25, 0.64) = 0.64  clipped term active
    #   v= 0.1 -> inside the range: max(0.81, 0.81) = 0.81
    #   v=-0.5 -> clipped to -0.2: max(2.25, 1.44) = 2.25
    # loss = 0.5 * (0.64 + 0.81 + 2.25) / 3 = 0.61666...; clip fraction = 1/3. Token 4 is masked.
    values = torch.tensor([[0.5, 0.1, -0.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])

    loss, clip_fraction = value_loss(
        values, torch.zeros_like(values), torch.ones_like(values), mask, clip_range=0.2
    )

    assert_close(loss, torch.tensor(0.5 * 3.7 / 3))
    assert_close(clip_fraction, torch.tensor(1 / 3))


def test_masked_whiten_normalises_over_the_mask_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])

    whitened = masked_whiten(x, mask)

    kept = whitened[mask.bool()]
    assert_close(kept.mean(), torch.tensor(0.0))
    assert_close(kept.var(correction=0), torch.tensor(1.0), atol=1e-5, rtol=1e-5)
    assert_close(whitened[~mask.bool()], torch.zeros(3))


def test_responses_end_at_their_first_eos():
    response = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])

    cut, mask = _cut_at_eos(response, eos_ids=[2], pad_id=0)

    assert cut.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


# ---- real runs on a tiny random Llama --------------------------------------------------------------

SETTINGS = PPOSettings(
    steps=2,
    prompts_per_step=2,
    samples_per_prompt=2,
    max_new_tokens=8,
    temperature=1.0,
    learning_rate=1e-2,
    kl_coef=0.05,
    seed=0,
    ppo_epochs=2,
    minibatch_size=2,
)


@pytest.fixture(scope="module")
def tokenizer(models_cache: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models_cache / "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    questions = ["What is the capital of France?", "Name a colour.", "Say hi."]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        for q in questions
    ]


def tiny_lora_llama(tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(LlamaForCausalLM(config), lora)


def fake_reward_prefers_short(indices: list[int], responses: list[str]) -> list[float]:
    return [1.0 - len(text) / 200 for text in responses]


def weights(model, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if name in k}


@pytest.mark.slow
def test_ppo_trains_the_adapter_only_and_saves_it(tokenizer, prompts, tmp_path: Path):
    model = tiny_lora_llama(tokenizer)
    lora_before = weights(model, "lora_B")
    base_before = weights(model, "q_proj.base_layer.weight")
    seen: list[dict[str, float]] = []

    metrics = train_ppo(
        model, tokenizer, prompts, fake_reward_prefers_short, SETTINGS, tmp_path, seen.append
    )

    assert metrics == seen
    assert [m["step"] for m in metrics] == [1.0, 2.0]
    for m in metrics:
        assert set(m) == set(METRIC_KEYS)
        assert all(math.isfinite(v) for v in m.values()), m
    lora_after = weights(model, "lora_B")
    assert all(lora_before[k].abs().sum() == 0 for k in lora_before)  # LoRA B starts at zero
    assert any(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
    base_after = weights(model, "q_proj.base_layer.weight")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert (tmp_path / "adapter_config.json").exists()
    assert (tmp_path / "adapter_model.safetensors").exists()
    assert (tmp_path / "value_head.safetensors").exists()
    assert not (tmp_path / STATE_DIR).exists()


@pytest.mark.slow
def test_interrupted_ppo_resumes_where_it_stopped(tokenizer, prompts, tmp_path: Path):
    straight = train_ppo(
        tiny_lora_llama(tokenizer),
        tokenizer,
        prompts,
        fake_reward_prefers_short,
        SETTINGS,
        tmp_path / "straight",
    )

    def stop(metrics: dict[str, float]) -> None:
        raise KeyboardInterrupt  # Ctrl-C right after step 1 was checkpointed

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_ppo(
            tiny_lora_llama(tokenizer),
            tokenizer,
            prompts,
            fake_reward_prefers_short,
            SETTINGS,
            out,
            stop,
        )
    assert (out / STATE_DIR).is_dir()

    seen: list[dict[str, float]] = []
    resumed = train_ppo(
        tiny_lora_llama(tokenizer),  # a fresh process would start from the base model again
        tokenizer,
        prompts,
        fake_reward_prefers_short,
        SETTINGS,
        out,
        seen.append,
    )

    assert [m["step"] for m in seen] == [2.0]
    assert [m["step"] for m in resumed] == [1.0, 2.0]
    assert not (out / STATE_DIR).exists()
    # Adapter, value head, optimizer and RNG all came back: step 2 is the uninterrupted step 2.
    for ours, theirs in zip(resumed, straight, strict=True):
        assert {k: v for k, v in ours.items() if "seconds" not in k} == pytest.approx(
            {k: v for k, v in theirs.items() if "seconds" not in k}, rel=1e-4, abs=1e-6
        )


def test_ppo_takes_the_knobs_it_shares_from_the_job_config():
    from criticloop.settings import TrainingSettings
    from criticloop.training import TrainConfig

    training = TrainingSettings(
        method="ppo", rl_steps=3, batch_size=5, rl_samples_per_prompt=6, rl_max_new_tokens=7,
        learning_rate=1e-3, kl_coef=0.2, seed=9,
    )  # fmt: skip
    config = TrainConfig(
        job_id="j", base_model="m", model_path="/m", home="/h", output_dir="/o", device="cpu",
        training=training, temperature=0.7,
    )  # fmt: skip
    ppo = PPOSettings.from_config(config, clip_range=0.1)
    assert (ppo.steps, ppo.prompts_per_step, ppo.samples_per_prompt, ppo.max_new_tokens) == (
        3, 5, 6, 7,
    )  # fmt: skip
    assert (ppo.temperature, ppo.learning_rate, ppo.kl_coef, ppo.seed) == (0.7, 1e-3, 0.2, 9)
    assert ppo.clip_range == 0.1 and ppo.gamma == 1.0 and ppo.ppo_epochs == 2  # PPO's own
    with pytest.raises(TypeError):
        PPOSettings(steps=2)  # the shared knobs have one default: TrainingSettings'


def test_ppo_refuses_to_run_as_one_of_several_processes(tmp_path: Path, monkeypatch):
    # Every rank would train its own copy and rename the same checkpoint folders.
    from criticloop.errors import InputError

    monkeypatch.setenv("WORLD_SIZE", "2")
    settings = PPOSettings(
        steps=1, prompts_per_step=1, samples_per_prompt=2, max_new_tokens=4, temperature=1.0,
        learning_rate=1e-3, kl_coef=0.05, seed=0,
    )  # fmt: skip
    with pytest.raises(InputError, match="PPO runs on one GPU: use --launcher subprocess"):
        train_ppo(None, None, [[1, 2]], lambda i, r: [0.0] * len(r), settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written
