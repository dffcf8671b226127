"""Reward models: the critic backend (local and served), the profile's wiring, bad models, and
``criticloop train --method reward`` on a constructed separable set, end to end into a graph run.

The models are tiny ones built from a config (random weights) with the bundled tokenizers: a
BERT encoder with MiniLM's (read as a cross-encoder) and a Llama with SmolLM2's (its chat
template). Scores are checked against the model's own forward pass, so nothing is faked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_cli, tiny_llama
from criticloop.agents import Case, run_critic
from criticloop.errors import ConfigError
from criticloop.reward import (
    RewardModelCritic,
    RewardModelSpec,
    RewardScorer,
    check_local,
    encode,
)
from criticloop.settings import Settings
from criticloop.store import Store
from support.pooling_server import PoolingServer

CONVERSATION = (("user", "How do I keep basil alive indoors?"),)
ANSWERS = [
    "Give it six hours of sun, water when the top inch is dry, and pinch the tops weekly.",
    "Basil.",
    "Keep it warm, by a bright window, in a pot that drains; harvest from the top.",
]


def _minilm_tokenizer():
    from criticloop.agents import embedder_ref
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedder_ref(Settings(_env_file=None)).source)


@pytest.fixture(scope="module")
def encoder_rm(tmp_path_factory) -> Path:
    """A tiny BERT sequence classifier (one label) with MiniLM's tokenizer: no chat template."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    path = tmp_path_factory.mktemp("rm") / "tiny-encoder"
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory, models_cache) -> Path:
    """A tiny Llama sequence classifier (one label) with SmolLM2's tokenizer and chat template."""
    path = tmp_path_factory.mktemp("rm") / "tiny-chat"
    return tiny_llama(models_cache, path, "LlamaForSequenceClassification", num_labels=1)


def _cases(prompt_id: str = "p1", answers=ANSWERS) -> list[Case]:
    return [Case(prompt_id, "general", CONVERSATION, text) for text in answers]


def _forward(path: Path, conversation, response: str) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    ids = encode(tokenizer, conversation, response, 1024)
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


# ---- the critic --------------------------------------------------------------------------------


def test_the_critic_scores_every_candidate_in_one_pass_through_the_chat_template(chat_rm):
    scorer = RewardScorer(RewardModelSpec(name="tiny", model=str(chat_rm), center=0.1))
    critic = RewardModelCritic("reward_model", "reward_model", scorer)
    cases = _cases()
    critic.prepare(cases)
    assert (scorer.passes, scorer.scored) == (1, 3)
    scores = [critic(c) for c in cases]
    assert scorer.passes == 1  # every call read the prepared scores

    conversation = [{"role": "user", "content": CONVERSATION[0][1]}]
    raws = [s.evidence["raw"] for s in scores]
    for raw, text in zip(raws, ANSWERS, strict=True):
        assert raw == pytest.approx(_forward(chat_rm, conversation, text), abs=1e-4)
    # The input is the conversation through the chat template, ending in the response.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_rm)
    text = tokenizer.decode(encode(tokenizer, conversation, ANSWERS[0], 1024))
    assert "<|im_start|>user" in text and ANSWERS[0] in text
    assert text.index(CONVERSATION[0][1]) < text.index(ANSWERS[0])

    for score, raw in zip(scores, raws, strict=True):
        assert score.dimension == "reward_model" and score.critic_version.startswith("rm:tiny-")
        assert score.score == pytest.approx(1 / (1 + math.exp(-(raw - 0.1))), abs=1e-5)
        closest = min((r for r in raws if r != raw), key=lambda r: abs(raw - r))
        margin = abs(2 / (1 + math.exp(-(raw - closest))) - 1)
        assert score.confidence == pytest.approx(margin, abs=1e-5)
        assert score.evidence["rivals"] == 2
    # A response alone takes its margin over a typical response (the center).
    alone = RewardModelCritic("reward_model", "reward_model", scorer)
    (case,) = _cases("p2", ANSWERS[:1])
    lone = alone(case)
    assert lone.evidence["rivals"] == 0
    assert lone.confidence == pytest.approx(abs(2 * lone.score - 1), abs=1e-5)


def test_an_encoder_reads_the_conversation_and_the_response_as_a_text_pair(encoder_rm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_rm)
    conversation = [{"role": "user", "content": "Name a colour."}]
    ids = encode(tokenizer, conversation, "Blue. " * 2000, 1024)
    assert len(ids) == 512  # the encoder's own limit wins over a larger max_length
    assert ids.count(tokenizer.sep_token_id) == 2
    assert tokenizer.decode(ids).startswith("[CLS] user : name a colour. [SEP] blue.")
    scorer = RewardScorer(RewardModelSpec(name="enc", model=str(encoder_rm)))
    (raw,) = scorer.score_many([(conversation, "Blue.")])
    assert raw == pytest.approx(_forward(encoder_rm, conversation, "Blue."), abs=1e-4)


def test_a_served_reward_model_answers_over_http_as_the_local_one_does(chat_rm):
    local = RewardScorer(RewardModelSpec(name="local", model=str(chat_rm)))

    def score(messages):
        return local.score_many([(messages[:-1], messages[-1]["content"])])[0]

    with PoolingServer(score) as server:
        spec = RewardModelSpec(name="served", url=server.base_url, served_model="tiny-rm")
        check_local(spec)  # nothing to check locally: the server has the model
        critic = RewardModelCritic("helpfulness", "helpfulness", RewardScorer(spec))
        cases = _cases()
        critic.prepare(cases)
        served = [critic(c) for c in cases]
        assert len(server.requests) == 3  # one request per response, none again on the call
        body = server.requests[0]["body"]
        assert body["model"] == "tiny-rm" and server.requests[0]["path"] == "/pooling"
        assert body["messages"][0] == {"role": "user", "content": CONVERSATION[0][1]}
        assert body["messages"][-1]["role"] == "assistant"
    direct = local.score_many(
        [([{"role": "user", "content": CONVERSATION[0][1]}], t) for t in ANSWERS]
    )
    assert [s.evidence["raw"] for s in served] == pytest.approx(direct, abs=1e-5)
    assert all(s.dimension == "helpfulness" for s in served)

    with PoolingServer(score, status=503) as busy:
        critic = RewardModelCritic(
            "r", "reward_model", RewardScorer(RewardModelSpec(name="busy", url=busy.base_url))
        )
        result = run_critic(critic, _cases()[0], None)
    assert result.score is None and "answered 503" in result.rationale
    dead = RewardModelCritic(
        "r", "reward_model", RewardScorer(RewardModelSpec(name="dead", url=busy.base_url))
    )
    result = run_critic(dead, _cases()[0], None)
    assert result.score is None and "ConnectError" in result.rationale


# ---- bad models and profiles -------------------------------------------------------------------


def test_what_is_not_a_reward_model_is_refused_in_one_line(
    tmp_path, models_cache, encoder_rm, monkeypatch
):
    causal = tiny_llama(models_cache, tmp_path / "causal", "LlamaForCausalLM")
    two = tmp_path / "two-labels"
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(
        encoder_rm, num_labels=2, ignore_mismatched_sizes=True
    ).save_pretrained(two)
    cases = {
        str(causal): "is a LlamaForCausalLM, not a reward model",
        str(tmp_path / "missing"): "no such directory",
        "Skywork/Skywork-Reward-V2-Qwen3-0.6B": "not found locally",
        str(two): "has 2 labels; a reward model gives one score",
    }
    for model, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            check_local(RewardModelSpec(name="x", model=model))

    # Through the command line: the profile names it, the run refuses before any work.
    profile = tmp_path / "profile.toml"
    profile.write_text(
        f'[reward_models.causal]\nmodel = "{causal}"\n\n[options.reward_model]\n'
        'model = "causal"\n\n[tasks.general.critics]\nreward_model = 1.0\n'
    )
    run_cli("init", "--no-demo", check=True)
    monkeypatch.setenv("CRITICLOOP_PROFILES", str(profile))
    result = run_cli("graph", "run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a reward model" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tasks.general.critics]\nreward_model = 1.0\n", "names no model"),
        ('[backends]\nhelpfulness = "reward_model:nope"\n', "no [reward_models.nope] table"),
        ('[backends]\nhelpfulness = "remote"\n', "must be local, crew or reward_model:NAME"),
        ('[reward_models.x]\nurl = "ftp://h"\n', "must start with http"),
        ("[reward_models.x]\ncenter = 1\n", "give model"),
    ],
)
def test_profiles_that_misname_a_reward_model_are_refused(tmp_path, text, message):
    from criticloop.reward import Profiles

    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Profiles.load(path)


# ---- training on people's decisions, then judging with it --------------------------------------


def _separable_labels(path: Path, n: int = 48) -> Path:
    """Pairs people decided one way: a helpful sentence beats a dismissive one, on either side."""
    rows = []
    for i in range(n):
        good = f"Here is a careful, useful answer to question {i}, with the steps to follow."
        bad = "whatever, no idea"
        a, b, label = (good, bad, "a") if i % 2 else (bad, good, "b")
        rows.append(
            {"prompt": f"Question {i}: how do I do task {i}?", "a": a, "b": b, "label": label}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_train_reward_learns_people_s_decisions_registers_and_judges_a_graph_run(
    model_home, tmp_path, encoder_rm, monkeypatch
):
    run_cli("init", "--no-demo", check=True)
    run_cli("labels", "import", str(_separable_labels(tmp_path / "labels.jsonl")), check=True)
    args = ("--rm-base", str(encoder_rm), "--max-steps", "60", "--batch-size", "8")
    summary = json.loads(
        run_cli(
            "train", "--method", "reward", *args, "--learning-rate", "3e-3", "--json", check=True
        ).stdout
    )
    assert summary["status"] == "done" and summary["activated"]
    m = summary["metrics"]
    assert m["steps"] == 60 and m["tuning"] == "full" and m["weights_changed"]
    with Store.open(Settings.load(env_file=None).db_path, create=False) as store:
        log = store.get_job(summary["job_id"])["metrics"]["log"]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 60 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-10:]) < sum(losses[:10])
    held = m["heldout"]
    assert held["n"] > 0 and m["pairs"] + held["n"] == 48  # held-out prompts never trained on
    assert held["accuracy"] > 0.75  # random weights start at chance on this set
    assert 0 <= held["ece"] <= 1 and sum(r["n"] for r in held["reliability"]) == 2 * held["n"]

    listed = json.loads(run_cli("reward-models", "list", "--json", check=True).stdout)
    (row,) = listed
    assert row["version"] == summary["reward_model"] and row["status"] == "active"
    assert row["base_path"] == str(encoder_rm) and Path(row["diagram_path"]).is_file()
    assert row["data_hash"] and row["config"]["method"] == "reward"
    assert "active" in run_cli("reward-models", "list", check=True).stdout

    # A profile that judges with it: its own dimension and in place of helpfulness.
    profile = tmp_path / "profile.toml"
    profile.write_text(
        "[routing]\nmax_revisions = 0\n\n"
        '[backends]\nhelpfulness = "reward_model:trained"\n\n'
        '[options.reward_model]\nmodel = "trained"\n\n'
        "[tasks.general.critics]\nreward_model = 0.5\nhelpfulness = 0.5\n"
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps(
            {
                "id": "basil",
                "prompt": "Question 7: how do I do task 7?",
                "candidates": [
                    "Here is a careful, useful answer to question 7, with the steps to follow.",
                    "whatever, no idea",
                ],
            }
        )
        + "\n"
    )
    run_cli("import", str(prompts), check=True)
    monkeypatch.setenv("CRITICLOOP_PROFILES", str(profile))
    out = run_cli("graph", "run", "-p", "basil", "--json", check=True).stdout
    run = json.loads(out)
    assert run["outcomes"].get("pair") == 1, run
    with Store.open(Settings.load(env_file=None).db_path, create=False) as store:
        (pair,) = list(store.iter_pairs())
        rows = list(store.db.query("SELECT critic_version, score FROM critiques"))
    assert pair["chosen"].startswith("Here is a careful")
    assert len(rows) == 4 and all(r["critic_version"] == f"rm:{row['version']}" for r in rows)
    assert rows[0]["score"] > 0.5 > rows[1]["score"] or rows[1]["score"] > 0.5 > rows[0]["score"]
    usage = run["critic_usage"]["per_critic"]
    assert usage["helpfulness/reward_model"]["calls"] == 2
    assert usage["reward_model/reward_model"]["calls"] == 2


@pytest.mark.slow
def test_labels_on_a_dimension_train_that_dimension_s_reward_model_alone(
    model_home, tmp_path, encoder_rm
):
    """Overall, people prefer the helpful answer; on "concision", the same pairs go the other way.
    A concision model trained on the concision labels alone learns the reverse."""
    overall = _separable_labels(tmp_path / "overall.jsonl")
    flip = {"a": "b", "b": "a"}
    concise = [
        {**json.loads(line), "dimension": "concision", "annotator": "editor"}
        for line in overall.read_text().splitlines()
    ]
    concise = [{**row, "label": flip[row["label"]]} for row in concise]
    both = tmp_path / "both.jsonl"
    both.write_text(overall.read_text() + "".join(json.dumps(r) + "\n" for r in concise))
    run_cli("init", "--no-demo", check=True)
    imported = run_cli("labels", "import", str(both), check=True).stdout
    assert "pairs 96 (96 new" in imported and "dimensions overall 48, concision 48" in imported
    assert "dimensions overall 48, concision 48" in run_cli("labels", "list", check=True).stdout
    with Store.open(Settings.load(env_file=None).db_path, create=False) as store:
        assert len(store.labelled_pairs()) == 48  # calibration sees the overall labels only
        assert len(store.labelled_pairs(dimension="concision")) == 48
        assert store.counts()["generations"] == 96  # the two labellings share their answers

    args = ("--rm-base", str(encoder_rm), "--max-steps", "60", "--batch-size", "8")
    summary = json.loads(
        run_cli(
            "train", "--method", "reward", "--rm-dimension", "concision", *args,
            "--learning-rate", "3e-3", "--json", check=True,
        ).stdout
    )  # fmt: skip
    m = summary["metrics"]
    assert m["pairs"] + m["heldout"]["n"] == 48 and m["sources"] == {"people:import": 48}
    assert m["heldout"]["accuracy"] > 0.75  # the concision labels: the dismissive answer wins
    with Store.open(Settings.load(env_file=None).db_path, create=False) as store:
        active = store.active_trained_reward_model("concision")
        assert active["version"] == summary["reward_model"] and active["dimension"] == "concision"
        assert store.active_trained_reward_model("") is None  # nothing overall was trained
    (row,) = json.loads(run_cli("reward-models", "list", "--json", check=True).stdout)
    assert row["dimension"] == "concision"

    result = run_cli("train", "--method", "reward", "--rm-dimension", "safety")
    assert result.returncode == 2 and "no decided pairs on 'safety'" in result.stderr
    result = run_cli("train", "--method", "reward", "--rm-dimension", "concision", "--rm-synthetic")
    assert result.returncode == 2 and "learns from labels on that dimension only" in result.stderr
    result = run_cli("train", "--method", "reward", "--rm-dimension", "Not A Name")
    assert result.returncode == 2 and "must be a critic's name" in result.stderr
    assert result.stderr.count("\n") == 1


def test_train_reward_refuses_what_it_cannot_train_in_one_line(hermetic, tmp_path):
    run_cli("init", "--no-demo", check=True)
    result = run_cli("train", "--method", "reward")
    assert result.returncode == 2 and "no decided pairs to train a reward model on" in result.stderr
    run_cli("labels", "import", str(_separable_labels(tmp_path / "labels.jsonl", 8)), check=True)
    result = run_cli("train", "--method", "reward", "--rm-base", str(tmp_path))
    assert result.returncode == 2 and "not minilm, smollm2 or a model directory" in result.stderr
    result = run_cli("train", "--method", "dpo", "--rm-base", "minilm")
    assert result.returncode == 2 and "--rm-base" in result.stderr
    result = run_cli("train", "--method", "ppo", "--reward", "rm")
    assert result.returncode == 2 and "critics, rm:NAME, mix or mix:NAME" in result.stderr
    result = run_cli("train", "--method", "ppo", "--reward", "rm:trained")
    assert result.returncode == 2 and "none is active" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (hermetic / "training").exists() or not any((hermetic / "training").iterdir())


def test_an_aggregator_fitted_before_the_reward_model_critic_still_loads():
    import numpy as np
    from criticloop.reward import FEATURES, RewardModel
    from criticloop.reward import _calstats as cs

    old = [f for f in FEATURES if "reward_model" not in f]
    data = {
        "features": old,
        "coef": [0.1 * (i + 1) for i in range(len(old))],
        "scale": [1.0] * len(old),
        "calibrator": cs.Calibrator("none").as_dict(),
    }
    model = RewardModel.from_dict(data)
    x = np.ones(len(FEATURES))
    assert model.logits(x)[0] == pytest.approx(sum(data["coef"]))  # the new features weigh 0
    with pytest.raises(ValueError, match="lacks"):
        RewardModel.from_dict({**data, "features": [*old[:-1], "gone"]})


def test_a_server_that_returns_probabilities_is_read_back_as_logits():
    raw = [2.0, -1.0]
    with PoolingServer(
        lambda messages: 1 / (1 + math.exp(-raw[len(messages[-1]["content"]) % 2]))
    ) as server:
        spec = RewardModelSpec(name="p", url=server.base_url, activation="sigmoid")
        got = RewardScorer(spec).score_many(
            [
                ([{"role": "user", "content": "q"}], "ab"),
                ([{"role": "user", "content": "q"}], "abc"),
            ]
        )
    assert got == pytest.approx(raw, abs=1e-6)


@pytest.mark.slow
def test_a_lora_reward_model_on_a_causal_lm_base_trains_and_judges(
    model_home, tmp_path, models_cache
):
    """--rm-tuning lora on a causal LM (as --rm-base smollm2 is): the adapter carries the score
    head, so the registered model loads as a critic on its causal base."""
    from criticloop.reward import Profiles, reward_model_spec

    base = tiny_llama(models_cache, tmp_path / "causal-base", "LlamaForCausalLM")
    run_cli("init", "--no-demo", check=True)
    run_cli("labels", "import", str(_separable_labels(tmp_path / "labels.jsonl", 16)), check=True)
    args = ("--rm-base", str(base), "--rm-tuning", "lora", "--max-steps", "3", "--batch-size", "4")
    summary = json.loads(run_cli("train", "--method", "reward", *args, "--json", check=True).stdout)
    assert summary["metrics"]["tuning"] == "lora" and summary["metrics"]["weights_changed"]
    settings = Settings.load(env_file=None)
    spec = reward_model_spec("trained", Profiles.load(), settings)
    assert spec.model == str(base) and spec.adapter and spec.version == summary["reward_model"]
    check_local(spec)
    critic = RewardModelCritic("reward_model", "reward_model", RewardScorer(spec))
    score = critic(_cases()[0])
    assert 0 < score.score < 1 and score.critic_version == f"rm:{summary['reward_model']}"

    # A causal-LM adapter (what DPO makes) is no reward model.
    config = json.loads((Path(spec.adapter) / "adapter_config.json").read_text())
    wrong = tmp_path / "dpo-adapter"
    wrong.mkdir()
    (wrong / "adapter_config.json").write_text(json.dumps({**config, "task_type": "CAUSAL_LM"}))
    with pytest.raises(ConfigError, match="is a CAUSAL_LM adapter, not a reward model's"):
        check_local(RewardModelSpec(name="x", model=str(base), adapter=str(wrong)))
