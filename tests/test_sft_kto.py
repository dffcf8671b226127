"""SFT and KTO: what they learn from, SFT's completion-only labels, the auto method rule, and
real few-step jobs on the bundled SmolLM2 through the same registry and gate as DPO.

For SFT the ratings are constructed with the store's verbs: for every demo prompt two stored
answers, a useful one rated well and a curt one rated badly. KTO's job is the nightly one:
`graph run --train auto` on the demo feedback log, which picks KTO for its new ratings.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from conftest import kill_after_first_checkpoint, run_cli
from criticloop.errors import InputError
from criticloop.settings import Settings, TrainingSettings
from criticloop.store import GenerationRecord, PairRecord, ReviewRecord, Store
from criticloop.training import is_heldout
from criticloop.training._cycle import choose_method
from criticloop.training._examples import (
    kto_weights,
    load_examples,
    load_kto_examples,
    load_sft_examples,
)

TINY = ("--max-steps", "2", "--batch-size", "2", "--save-steps", "1")
WEIGHTS = {"synthetic": 1.0, "revision": 1.5, "human": 3.0, "human-revision": 3.0}


def rate_answers(store: Store, *, extra_good: bool = False) -> dict[str, int]:
    """Two answers per prompt: a useful one (thumbs up, or 5 stars) and a curt one (thumbs down,
    or 1 star); every third prompt also gets a 3-star answer, and with ``extra_good`` every
    other prompt a second good one (more desirable than undesirable answers, as in practice).
    Returns what was recorded."""
    counts = {"good": 0, "bad": 0, "three": 0}
    for i, pid in enumerate(store.prompt_ids()):
        request = store.get_prompt(pid)["text"]
        texts = [f"Here is a clear answer about {request[:40].lower()}", "No.", "Maybe later."]
        gens = [GenerationRecord(pid, "cfg", k, t, "m", {}) for k, t in enumerate(texts)]
        store.record_generations(gens)
        kind = "thumbs" if i % 2 else "stars"
        good = {"thumbs": "up"} if kind == "thumbs" else {"stars": 5}
        bad = {"thumbs": "down"} if kind == "thumbs" else {"stars": 1}
        for gen, verdict, key in ((gens[0], good, "good"), (gens[1], bad, "bad")):
            store.record_review(ReviewRecord(pid, "ana", kind, generation_id=gen.id, **verdict))
            counts[key] += 1
        if i % 3 == 0:
            store.record_review(
                ReviewRecord(pid, "ana", "stars", generation_id=gens[2].id, stars=3)
            )
            counts["three"] += 1
        if extra_good and i % 2 == 0:
            more = GenerationRecord(
                pid, "cfg", 3, f"Sure: {request[:40].lower()}, answered.", "m", {}
            )
            store.record_generations([more])
            store.record_review(
                ReviewRecord(pid, "bo", "thumbs", generation_id=more.id, thumbs="up")
            )
            counts["good"] += 1
    return counts


# ---- data ------------------------------------------------------------------------------------


def test_sft_learns_good_answers_rewrites_and_accepted_revisions_never_held_out(demo_store):
    rate_answers(demo_store)
    ids = demo_store.prompt_ids()
    kept = [pid for pid in ids if not is_heldout(pid, 20)]
    first = kept[0]
    demo_store.record_pair(PairRecord(first, "A revision the critics took.", "Old.", "revision"))
    demo_store.record_pair(PairRecord(first, "A person chose this.", "Not this.", "human"))
    demo_store.record_pair(PairRecord(first, "Only better than the other.", "Bad.", "synthetic"))
    gen = GenerationRecord(first, "cfg", 0, "", "m", {})
    demo_store.record_review(
        ReviewRecord(first, "bo", "rewrite", generation_id=gen.id, rewrite="A person's rewrite.")
    )
    # a production rating (a feedback log's import stores one as a review with source 'log')
    log_gen = GenerationRecord(kept[1], "prod", 0, "An answer users liked.", "m", {})
    demo_store.record_generations([log_gen])
    demo_store.record_review(
        ReviewRecord(kept[1], "user-7", "thumbs", generation_id=log_gen.id, thumbs="up")
    )
    data = load_sft_examples(demo_store, WEIGHTS, heldout_percent=20)
    texts = {row["completion"][0]["content"] for row in data.rows}
    assert {"A revision the critics took.", "A person chose this.", "A person's rewrite."} <= texts
    assert "An answer users liked." in texts
    assert "Only better than the other." not in texts  # a synthetic pair's chosen side: no
    assert not texts & {"No.", "Maybe later."}  # bad and 3-star answers: no
    # every good rating of a prompt outside the held-out share, and nothing held out
    ratings = sum(n for source, n in data.sources.items() if source.startswith("rating:"))
    assert ratings == len(kept) + 1
    prompts = {json.dumps(row["prompt"]) for row in data.rows}
    held = {json.dumps(_conversation(demo_store, p)) for p in ids if is_heldout(p, 20)}
    assert held and not prompts & held
    assert data.skipped["held out for the gate"] > 0
    row = data.rows[0]
    assert row["prompt"][0]["role"] == "system" and row["prompt"][-1]["role"] == "user"
    assert [turn["role"] for turn in row["completion"]] == ["assistant"]
    weight = dict(
        zip((r["completion"][0]["content"] for r in data.rows), data.weights, strict=True)
    )
    assert weight["A revision the critics took."] == 1.5 and weight["A person's rewrite."] == 3.0
    assert weight["A person chose this."] == 3.0
    no_ratings = load_sft_examples(demo_store, {**WEIGHTS, "human": 0.0}, 20)
    assert "An answer users liked." not in {r["completion"][0]["content"] for r in no_ratings.rows}


def _conversation(store, prompt_id):
    from criticloop.training._data import policy_conversation

    return policy_conversation(store, prompt_id)


def test_kto_labels_rated_answers_and_leaves_three_stars_out(demo_store):
    recorded = rate_answers(demo_store)
    data = load_kto_examples(demo_store, heldout_percent=0)
    assert data.desirable == recorded["good"] and data.undesirable == recorded["bad"]
    assert data.skipped["3 stars (neither good nor bad)"] == recorded["three"] > 0
    labels = {row["completion"][0]["content"][:4]: row["label"] for row in data.rows}
    assert labels == {"Here": True, "No.": False}
    # two people disagreeing on one answer: by majority, and a tie is left out
    pid = demo_store.prompt_ids()[0]
    curt = GenerationRecord(pid, "cfg", 1, "No.", "m", {})
    demo_store.record_review(ReviewRecord(pid, "bo", "thumbs", generation_id=curt.id, thumbs="up"))
    again = load_kto_examples(demo_store, heldout_percent=0)
    assert again.undesirable == data.undesirable - 1
    assert again.skipped["rated good and bad equally often"] == 2


def test_kto_weights_lie_in_trl_recommended_range():
    for desirable, undesirable in ((30, 10), (10, 30), (7, 3), (1, 50), (12, 12)):
        dw, uw = kto_weights(desirable, undesirable)
        assert 1.0 <= dw * desirable / (uw * undesirable) <= 4 / 3
        assert dw == 1.0 or uw == 1.0  # TRL: raise one of the two, not both
        # TRL's own check (KTOTrainer warns outside it), with its rounding
        low = round(undesirable * uw / desirable, 2)
        assert desirable == undesirable or low <= dw <= round(
            undesirable * uw / desirable * 1.33, 2
        )


def test_too_little_data_is_one_line_naming_what_is_missing(demo_store):
    sft = TrainingSettings(method="sft")
    with pytest.raises(InputError, match="no good answers to train SFT on") as err:
        load_examples(demo_store, sft)
    assert "\n" not in str(err.value)
    pid = demo_store.prompt_ids()[0]
    gen = GenerationRecord(pid, "cfg", 0, "Fine answer.", "m", {})
    demo_store.record_generations([gen])
    demo_store.record_review(ReviewRecord(pid, "ana", "stars", generation_id=gen.id, stars=5))
    with pytest.raises(InputError, match=r"both kinds: \d desirable .* 0 undesirable") as err:
        load_examples(demo_store, TrainingSettings(method="kto", heldout_percent=0))
    assert "\n" not in str(err.value)


def test_train_sft_with_no_data_is_refused_before_any_model_loads(hermetic):
    run_cli("init", check=True)
    for method, words in (("sft", "no good answers"), ("kto", "KTO needs rated answers")):
        result = run_cli("train", "--method", method, "--no-gate")
        assert result.returncode == 2 and words in result.stderr
        assert result.stderr.count("\n") == 1
    assert not (hermetic / "models" / "smollm2-135m-instruct").exists()


# ---- graph run --train auto: which method ------------------------------------------------------


def test_auto_picks_the_method_the_new_data_calls_for():
    default = TrainingSettings()
    assert default.auto_methods == ["dpo", "kto", "sft"]
    # only pairs: as before, DPO once min_new_pairs exist, nothing before
    assert choose_method({"pairs": 16, "ratings": 0, "positives": 0}, default)[0] == "dpo"
    method, why = choose_method({"pairs": 15, "ratings": 0, "positives": 0}, default)
    assert method is None and "15 new pairs since the last training, fewer than 16" in why
    assert "(CRITICLOOP_TRAINING__MIN_NEW_PAIRS)" in why
    # ratings without enough pairs: KTO; good answers alone: SFT
    assert choose_method({"pairs": 3, "ratings": 20, "positives": 20}, default)[0] == "kto"
    assert choose_method({"pairs": 3, "ratings": 5, "positives": 16}, default)[0] == "sft"
    # the order is the preference
    both = {"pairs": 40, "ratings": 40, "positives": 40}
    assert choose_method(both, TrainingSettings(auto_methods=["kto", "dpo"]))[0] == "kto"
    assert choose_method(both, TrainingSettings(auto_methods=["sft"]))[0] == "sft"
    # thresholds are settings
    low = TrainingSettings(min_new_ratings=2, min_new_examples=100)
    assert choose_method({"pairs": 0, "ratings": 2, "positives": 50}, low)[0] == "kto"
    assert choose_method({"pairs": 0, "ratings": 1, "positives": 50}, low)[0] is None
    # new pairs still train the configured pair or prompt method
    assert choose_method(both, TrainingSettings(method="ppo"))[0] == "ppo"
    assert choose_method(both, TrainingSettings(method="kto"))[0] == "dpo"


def test_auto_methods_and_thresholds_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRITICLOOP_TRAINING__AUTO_METHODS", '["sft", "dpo"]')
    monkeypatch.setenv("CRITICLOOP_TRAINING__MIN_NEW_RATINGS", "4")
    training = Settings.load(env_file=None).training
    assert training.auto_methods == ["sft", "dpo"] and training.min_new_ratings == 4
    monkeypatch.setenv("CRITICLOOP_TRAINING__AUTO_METHODS", '["ppo"]')
    from criticloop.errors import ConfigError

    with pytest.raises(ConfigError):
        Settings.load(env_file=None)


def test_counts_of_new_feedback_follow_the_last_training(demo_store):
    recorded = rate_answers(demo_store)
    pid = demo_store.prompt_ids()[0]
    demo_store.record_pair(PairRecord(pid, "A revision the critics took.", "Old.", "revision"))
    counts = demo_store.feedback_counts_since(None)
    assert counts["ratings"] == recorded["good"] + recorded["bad"] + recorded["three"]
    # pairs are DPO's trigger alone: a store with only pairs trains as it always did
    assert counts["positives"] == recorded["good"] and counts["pairs"] == 1
    assert demo_store.feedback_counts_since("9999")["ratings"] == 0


# ---- SFT's labels: the loss is on the last assistant turn only -----------------------------------


def _job_config(home: Path, method: str, **training):
    from criticloop.agents import policy_ref
    from criticloop.training import TrainConfig

    settings = Settings.load(env_file=None)
    changes = {"method": method, "max_length": 256, "batch_size": 2, "max_steps": 2} | training
    config = TrainConfig.build(
        settings, settings.training.model_copy(update=changes), policy_ref(settings), "cpu",
        "inprocess",
    )  # fmt: skip
    return config.for_job("train-test", home / "training" / "train-test")


def test_sft_masks_every_token_but_the_last_assistant_turn(model_home):
    from criticloop.training._dpo import load_base
    from criticloop.training._sft import sft_trainer

    config = _job_config(model_home, "sft")
    model, tokenizer = load_base(config)
    prompt = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris, of course."},
        {"role": "user", "content": "And of Italy?"},
    ]
    answer = "Rome is the capital of Italy."
    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}]
    trainer = sft_trainer(config, rows, [1.0], model, tokenizer)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    first = next(i for i, label in enumerate(labels) if label != -100)
    # everything before the answer is masked: system, both user turns, the earlier assistant turn
    assert all(label == -100 for label in labels[:first])
    assert "Paris" in tokenizer.decode(ids[:first]) and "And of Italy?" in tokenizer.decode(
        ids[:first]
    )
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    # and everything from the answer on is learned, as it is, up to the end of the turn
    assert labels[first:] == ids[first:]
    learned = tokenizer.decode(labels[first:])
    assert learned.startswith(answer) and learned.rstrip().endswith("<|im_end|>")
    assert "Paris" not in learned


# ---- real jobs ----------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rated_home(tmp_path_factory, models_cache):
    home = tmp_path_factory.mktemp("sft-kto-home")
    (home / "models").symlink_to(models_cache, target_is_directory=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CRITICLOOP_HOME", str(home))
        run_cli("init", check=True)
        with Store.open(home / "criticloop.db", create=False) as store:
            rate_answers(store, extra_good=True)
    return home


def check_trained_adapter(home: Path, summary: dict, method: str, base_sha: str) -> dict:
    """What every finished SFT or KTO job must show: a loss per step, the job and adapter in the
    registry, LoRA weights that moved, the base model untouched, and the gate's decision on
    held-out prompts. Returns the job's metrics."""
    from safetensors.torch import load_file

    assert summary["status"] == "done" and summary["method"] == method
    with Store.open(home / "criticloop.db", create=False) as store:
        job = store.get_job(summary["job_id"])
        adapter = store.get_adapter(summary["adapter"])
        reports = store.gate_reports(summary["adapter"])
    steps = job["metrics"]["steps"]
    losses = [entry["loss"] for entry in job["metrics"]["log"] if "loss" in entry]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    assert job["status"] == "done" and job["method"] == method
    assert adapter["method"] == method and adapter["data_hash"] == job["data_hash"]
    assert summary["adapter"].startswith(f"{method}-")
    tensors = load_file(str(Path(adapter["path"]) / "adapter_model.safetensors"))
    assert tensors and all("lora_" in name for name in tensors)
    assert any(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    assert _sha(home / "models" / "smollm2-135m-instruct" / "model.safetensors") == base_sha
    assert summary["gate"]["decision"] in ("promote", "keep") and reports
    assert job["metrics"]["skipped"]["held out for the gate"] > 0
    return job["metrics"]


@pytest.mark.slow
def test_sft_trains_a_lora_adapter_through_registry_and_gate(rated_home, monkeypatch):
    monkeypatch.setenv("CRITICLOOP_HOME", str(rated_home))
    monkeypatch.setenv("CRITICLOOP_TRAINING__MAX_LENGTH", "256")
    monkeypatch.setenv("CRITICLOOP_GATE__PROMPTS", "2")
    monkeypatch.setenv("CRITICLOOP_GATE__SAMPLES_PER_PROMPT", "1")
    monkeypatch.setenv("CRITICLOOP_GATE__MAX_NEW_TOKENS", "8")
    before = _sha(rated_home / "models" / "smollm2-135m-instruct" / "model.safetensors")
    summary = json.loads(run_cli("train", "--method", "sft", *TINY, "--json", check=True).stdout)
    metrics = check_trained_adapter(rated_home, summary, "sft", before)
    assert metrics["steps"] == 2
    assert metrics["sources"]["rating:reviewer"] == metrics["examples"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kto"])  # SFT resumes through the same fit() (and DPO's test)
def test_a_killed_kto_job_resumes_from_its_checkpoint(model_home, method, tiny_policy, monkeypatch):
    monkeypatch.setenv("CRITICLOOP_TRAINING__MAX_LENGTH", "128")
    monkeypatch.setenv("CRITICLOOP_POLICY__MODEL", str(tiny_policy))  # resuming is model-blind
    run_cli("init", check=True)
    with Store.open(model_home / "criticloop.db", create=False) as store:
        rate_answers(store, extra_good=True)
    args = ["train", "--method", method, "--launcher", "subprocess", *TINY, "--no-gate", "--json"]
    failed = kill_after_first_checkpoint(*args, home=model_home)
    assert failed["status"] == "failed" and "killed by SIGKILL" in failed["reason"]

    resumed = json.loads(run_cli(*args, check=True).stdout)
    assert resumed["status"] == "done" and resumed["method"] == method
    assert resumed["resumed"] is True and resumed["metrics"]["resumed_from"] == "checkpoint-1"
    assert resumed["metrics"]["steps"] == 2
    jobs = json.loads(run_cli("jobs", "--json", check=True).stdout)
    assert [(j["id"], j["status"]) for j in jobs] == [(resumed["job_id"], "done")]
    # the resumed job logged step 2 only once, after the step 1 its first run logged
    assert [e["step"] for e in jobs[0]["metrics"]["log"] if "loss" in e] == [1, 2]


@pytest.mark.slow
def test_the_nightly_job_trains_kto_on_new_ratings_and_not_again_on_the_same(
    model_home, monkeypatch
):
    from criticloop.store import DEMO_FEEDBACK

    for name, value in {
        "TRAINING__MIN_NEW_PAIRS": "1000",  # the night's few pairs do not call for DPO
        "TRAINING__MIN_NEW_RATINGS": "10",
        "FEEDBACK__REVISE_NIGHTLY": "false",
        "TRAINING__MAX_STEPS": "1",
        "TRAINING__BATCH_SIZE": "2",
        "TRAINING__MAX_LENGTH": "128",
        "GATE__PROMPTS": "2",
        "GATE__SAMPLES_PER_PROMPT": "1",
        "GATE__MAX_NEW_TOKENS": "8",
    }.items():
        monkeypatch.setenv(f"CRITICLOOP_{name}", value)
    run_cli("init", check=True)
    run_cli("feedback", "import", str(DEMO_FEEDBACK), check=True)
    before = _sha(model_home / "models" / "smollm2-135m-instruct" / "model.safetensors")
    night = ("graph", "run", "-p", "general-001", "-k", "2", "--max-new-tokens", "8")
    summary = json.loads(run_cli(*night, "--train", "auto", "--json", check=True).stdout)
    training = summary["training"]
    assert "new ratings since the last training (at least 10): kto" in training["chosen_because"]
    assert training["new_data"]["ratings"] >= 30
    metrics = check_trained_adapter(model_home, training, "kto", before)
    # the demo log rates more answers good than bad: TRL's recommended weights even them out
    d, u = metrics["desirable"], metrics["undesirable"]
    assert d > u > 0 and d + u == metrics["examples"]
    assert metrics["desirable_weight"] == 1.0 < metrics["undesirable_weight"]
    assert 1.0 <= metrics["weighted_ratio"] <= 4 / 3
    assert metrics["skipped"]["3 stars (neither good nor bad)"] > 0

    again = json.loads(run_cli(*night, "--train", "auto", "--json", check=True).stdout)
    assert again["training"]["status"] == "skipped"
    assert "0 new ratings since the last training" in again["training"]["reason"]
