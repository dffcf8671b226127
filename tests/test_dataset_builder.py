"""The dataset builder's checks, `criticloop sft export`, and what a training job cost."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from criticloop.settings import Settings, TrainingSettings
from criticloop.store import GenerationRecord, PairRecord, ReviewRecord, Store
from criticloop.training import DatasetBuilder, DatasetLimits, build_dataset

USER = [{"role": "user", "content": "How do I reset my password?"}]
ANSWER = "Open Settings, choose Security, then Reset password and follow the emailed link."


def pair(prompt=USER, chosen=ANSWER, rejected="No idea.", **extra):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


# ---- the checks --------------------------------------------------------------------------------


def test_format_checks_remove_what_they_should_with_their_reason_and_first_example():
    rows = [
        pair(id="ok"),
        pair(prompt=[{"role": "robot", "content": "hi"}], id="bad-role"),
        pair(prompt=[{"role": "user", "content": "  "}], id="empty-turn"),
        pair(prompt=[*USER, {"role": "assistant", "content": "Sure."}], id="ends-with-assistant"),
        pair(chosen="", id="empty-answer"),
        pair(chosen="Same.", rejected="Same.", id="same"),
    ]
    kept, report = build_dataset(rows)
    assert [r["id"] for r in kept] == ["ok"]
    assert report.removed == {
        "bad_role": 1, "empty_turn": 2, "no_user_turn_last": 1, "identical": 1,
    }  # fmt: skip
    assert report.first["bad_role"] == "bad-role: role 'robot'"
    assert report.first["empty_turn"].startswith("empty-turn")
    assert report.first["no_user_turn_last"].startswith("ends-with-assistant")


def test_sft_and_kto_rows_are_checked_in_trl_shapes():
    sft = [
        {"messages": [*USER, {"role": "assistant", "content": ANSWER}]},
        {"messages": USER},  # no answer to learn
        {"prompt": USER, "completion": [{"role": "assistant", "content": "Reset it."}]},
    ]
    kept, report = build_dataset(sft, kind="sft")
    assert len(kept) == 2 and report.removed == {"empty_turn": 1}
    assert report.first["empty_turn"] == "row 2: an empty answer"
    kto = [{"prompt": USER, "completion": "Reset it.", "label": True}]
    assert len(build_dataset(kto, kind="kto")[0]) == 1


def test_length_limits_in_tokens_by_characters_or_a_tokenizer():
    limits = DatasetLimits(max_prompt_tokens=10, max_response_tokens=5, chars_per_token=4)
    rows = [
        pair(chosen="short one", id="fits"),  # 3 tokens by characters
        pair(prompt=[{"role": "user", "content": "x" * 60}], id="long-prompt"),
        pair(chosen="y" * 40, id="long-answer"),
    ]
    kept, report = build_dataset(rows, limits=limits)
    assert [r["id"] for r in kept] == ["fits"]
    assert report.first["prompt_too_long"] == "long-prompt: 17 > 10 tokens"
    assert report.first["response_too_long"] == "long-answer: 10 > 5 tokens"

    class Words:  # a tokenizer: one token per word
        name_or_path = "words"

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": text.split()}

    kept, report = build_dataset(rows[2:], tokenizer=Words(), limits=limits)
    assert len(kept) == 1 and report.tokenizer == "words"  # one word: one token


def test_duplicates_and_near_duplicates_go_and_distinct_texts_stay():
    long = (
        "Open the Settings page, choose Security, press Reset password, wait for the email and "
        "follow its link within one hour; the old password stops working at once."
    )
    rows = [
        pair(chosen=long, id="first"),
        pair(chosen=long.upper() + "  ", id="same-but-case"),
        pair(chosen=long.replace("one hour", "one  hour!"), id="same-but-punctuation"),
        pair(chosen=long.replace("press", "click"), id="near"),  # one word of 28
        pair(
            chosen="Call support on 0800 123 456 and they will reset it for you today.",
            id="distinct",
        ),
        pair(prompt=[{"role": "user", "content": "How do I delete my account?"}], id="other-q"),
    ]
    kept, report = build_dataset(rows)
    assert [r["id"] for r in kept] == ["first", "distinct", "other-q"]
    assert report.removed == {"duplicate": 2, "near_duplicate": 1}
    assert report.first["near_duplicate"].startswith("near: ") and "like first" in (
        report.first["near_duplicate"]
    )
    # 1 turns the near-duplicate check off.
    kept, report = build_dataset(rows, limits=DatasetLimits(near_duplicate_threshold=1.0))
    assert "near_duplicate" not in report.removed and len(kept) == 4


def test_a_shared_system_message_does_not_make_prompts_alike():
    system = {"role": "system", "content": "You are the helpful assistant of Acme. " * 40}
    rows = [
        pair(prompt=[system, {"role": "user", "content": f"Question number {i} about {topic}?"}])
        for i, topic in enumerate(["billing", "shipping", "returns"])
    ]
    kept, report = build_dataset(rows, limits=DatasetLimits(max_prompt_tokens=10_000))
    assert len(kept) == 3 and not report.removed


def test_token_counts_of_what_is_kept():
    rows = [pair(chosen="a" * 8, rejected="b" * 4), pair(prompt=[USER[0]], chosen="c" * 12)]
    kept, report = build_dataset(rows, limits=DatasetLimits(chars_per_token=4))
    prompt = len("user: How do I reset my password?")  # the rendered turn, 33 characters
    first = -(-prompt // 4) + 2 + 1
    second = -(-prompt // 4) + 3 + 2  # "No idea." is 8 characters
    assert report.tokens == [first, second]
    summary = report.as_dict()["tokens"]
    assert summary["total"] == first + second and summary["per_example"] == [first, second]
    assert summary["counted_with"] == "chars/4"
    assert report.lines()[0].startswith(f"kept 2 examples, {first + second} tokens")


def test_the_builder_checks_one_row_at_a_time_and_names_rows_it_is_given():
    builder = DatasetBuilder("pairs")
    assert builder.check(pair(), "pr-1") is None
    assert builder.check(pair(), "pr-2") == "duplicate"
    assert builder.report.first == {"duplicate": "pr-2: the same text as an earlier example"}


def test_limits_come_from_the_training_settings(monkeypatch):
    monkeypatch.setenv("CRITICLOOP_TRAINING__MAX_PROMPT_TOKENS", "77")
    monkeypatch.setenv("CRITICLOOP_TRAINING__NEAR_DUPLICATE_THRESHOLD", "0.8")
    limits = DatasetLimits.from_settings(Settings.load(env_file=None).training)
    assert (limits.max_prompt_tokens, limits.near_duplicate_threshold) == (77, 0.8)
    assert limits.max_response_tokens == TrainingSettings().max_response_tokens


# ---- the commands ------------------------------------------------------------------------------


def test_pairs_export_gains_the_new_reasons_and_counts_tokens(settings, tmp_path, monkeypatch):
    run_cli("init", check=True)
    long = "Reset it from Settings, then Security, then Reset password, then the emailed link."
    with Store.open(settings.db_path) as store:
        store.record_pair(PairRecord("general-001", long, "No.", "synthetic"))
        store.record_pair(PairRecord("general-001", long.replace("link", "link."), "No", "human"))
        store.record_pair(PairRecord("general-002", "z " * 900, "short", "synthetic"))
        store.record_pair(PairRecord("general-003", "A fine answer.", "A poor one.", "synthetic"))
    monkeypatch.setenv("CRITICLOOP_TRAINING__MAX_RESPONSE_TOKENS", "300")
    out = tmp_path / "pairs.jsonl"
    report = json.loads(run_cli("pairs", "export", str(out), "--json", check=True).stdout)
    assert report["written"] == 2
    assert report["skipped"] == {"duplicate": 1, "response_too_long": 1}  # normalised duplicate
    assert report["checks"]["tokens"]["total"] > 0
    assert len(report["checks"]["tokens"]["per_example"]) == 2
    text = run_cli("pairs", "export", str(out), check=True).stdout
    assert "skipped 1 response_too_long" in text and "tokens (chars/4): " in text


def _seed_sft(settings) -> dict[str, str]:
    run_cli("init", check=True)
    with Store.open(settings.db_path) as store:
        texts = {
            0: "Thumbs up for this clear answer about the campaign.",
            1: "Four stars: a useful, friendly answer with the right facts.",
            2: "Two stars: not good enough to learn from.",
            3: "Thumbs down: never learn this.",
        }
        records = [
            GenerationRecord("general-001", "cfg", i, text, "m", {}) for i, text in texts.items()
        ]
        store.record_generations(records)
        ids = [r.id for r in records]
        reviews = [
            ReviewRecord("general-001", "ann", "thumbs", generation_id=ids[0], thumbs="up"),
            ReviewRecord("general-001", "ann", "stars", generation_id=ids[1], stars=4),
            ReviewRecord("general-001", "bob", "stars", generation_id=ids[2], stars=2),
            ReviewRecord("general-001", "ann", "thumbs", generation_id=ids[3], thumbs="down"),
            ReviewRecord(
                "general-002", "ann", "rewrite", generation_id=ids[2], other_generation_id=ids[3],
                preference="a", rewrite="A person's rewrite, the answer to learn.",
            ),  # fmt: skip
        ]
        for review in reviews:
            store.record_review(review)
        store.record_pair(PairRecord("general-003", "People chose this one.", "Not this.", "human"))
        store.record_pair(
            PairRecord("general-002", "A person's rewrite, the answer to learn.", "x", "human-revision")
        )  # the rewrite again, as its pair: one example
        store.record_pair(PairRecord("general-004", "Synthetic: not for SFT.", "No.", "synthetic"))
        return store.get_prompt("general-002")["messages"]


def test_sft_export_writes_trl_conversational_jsonl_from_what_people_endorsed(settings, tmp_path):
    conversation = _seed_sft(settings)
    out = tmp_path / "sft.jsonl"
    report = json.loads(run_cli("sft", "export", str(out), "--json", check=True).stdout)
    assert report["written"] == 4 and report["skipped"] == {}
    assert report["sources"] == {"thumbs-up": 1, "stars": 1, "rewrite": 1, "pair": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    answers = [row["messages"][-1]["content"] for row in rows]
    assert "A person's rewrite, the answer to learn." in answers
    assert not any("Two stars" in a or "Thumbs down" in a or "Synthetic" in a for a in answers)
    rewrite = rows[answers.index("A person's rewrite, the answer to learn.")]
    assert rewrite["messages"][:-1] == conversation
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant"
        assert row["messages"][-2]["role"] == "user"
    assert report["checks"]["tokens"]["total"] > 0

    from datasets import load_dataset  # TRL's SFTTrainer reads "messages" rows as they are
    from trl.data_utils import is_conversational

    dataset = load_dataset("json", data_files=str(out), split="train")
    assert len(dataset) == 4 and is_conversational(dataset[0])

    text = run_cli("sft", "export", str(out), check=True).stdout
    assert text.startswith(f"wrote 4 SFT examples to {out} (found: 1 pair, 1 rewrite,")


# ---- costs -------------------------------------------------------------------------------------


def _job(store: Store, job_id: str = "train-x") -> str:
    return store.start_job(
        job_id=job_id, method="dpo", launcher="inprocess", base_model="m", parent_version=None,
        config={}, data_hash="h", examples=3, output_dir="/tmp/x", log_path="/tmp/x/log",
    )  # fmt: skip


def test_a_job_records_wall_time_tokens_device_hours_and_cost(store):
    _job(store)
    first = store.record_job_cost("train-x", wall_seconds=1800, devices=2, tokens=None, price=3.0)
    assert first == {
        "wall_seconds": 1800, "tokens": None, "devices": 2, "device_hours": 1.0,
        "device_hour_price": 3.0, "cost": 3.0,
    }  # fmt: skip
    # A resumed job adds its second attempt's time; the tokens are the finished count.
    again = store.record_job_cost("train-x", wall_seconds=1800, devices=2, tokens=5000, price=3.0)
    assert (again["wall_seconds"], again["device_hours"], again["cost"]) == (3600, 2.0, 6.0)
    job = store.get_job("train-x")
    assert (job["tokens"], job["device_hours"], job["cost"]) == (5000, 2.0, 6.0)
    _job(store, "train-y")
    free = store.record_job_cost("train-y", wall_seconds=36, devices=1, tokens=10)
    assert free["cost"] is None and free["device_hours"] == 0.01


def test_tokens_processed_from_the_trainer_or_the_data_times_epochs(tmp_path):
    from criticloop.training import TrainConfig
    from criticloop.training._costs import tokens_processed

    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({**pair(chosen="a" * 8, rejected="b" * 4), "weight": 1.0}) + "\n"
    )
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    config = TrainConfig(
        job_id="j", base_model="m", model_path=str(tmp_path / "no-model"), home=str(tmp_path),
        output_dir=str(tmp_path), device="cpu", training=TrainingSettings(epochs=2),
    )  # fmt: skip
    once = -(-len(USER[0]["content"]) // 4) + 2 + 1  # user text, chosen, rejected
    assert tokens_processed(config, tmp_path, {"log": [{"step": 1}]}) == 2 * once
    assert tokens_processed(config, tmp_path, {"log": [{"step": 1, "epoch": 0.5}]}) == once // 2
    seen = {"log": [{"step": 1, "num_input_tokens_seen": 123}, {"step": 2}]}
    assert tokens_processed(config, tmp_path, seen) == 123
    assert tokens_processed(config, tmp_path, {"log": []}, finished=False) is None


def test_jobs_and_train_show_the_cost(hermetic, capsys):
    from criticloop.cli._train import echo_training

    run_cli("init", "--no-demo", check=True)
    with Store.open(Settings.load(env_file=None).db_path, create=False) as store:
        _job(store)
        store.finish_job("train-x", "done")
        store.record_job_cost("train-x", wall_seconds=90, devices=1, tokens=12345, price=2.5)
    out = run_cli("jobs", check=True).stdout
    assert "90.0 s wall, 12,345 tokens, 0.0250 device-hours (1 device)" in out
    assert "cost 0.0625 at 2.5 per device-hour" in out
    (job,) = json.loads(run_cli("jobs", "--json", check=True).stdout)
    assert (job["wall_seconds"], job["tokens"], job["device_hours"], job["cost"]) == (
        90, 12345, 0.025, 0.0625
    )
    cost = {k: job[k] for k in ("wall_seconds", "tokens", "devices", "device_hours", "cost")}
    summary = {
        "status": "done", "method": "dpo", "adapter": "dpo-x", "job_id": "train-x",
        "metrics": {"steps": 2, "seconds": 90, "cost": {**cost, "device_hour_price": 2.5}},
    }  # fmt: skip
    echo_training(summary)
    assert "cost: 90.0 s wall, 12,345 tokens" in capsys.readouterr().out


@pytest.mark.parametrize("price", ["-1", "x"])
def test_a_bad_price_is_refused_when_settings_load(price, monkeypatch):
    from criticloop.errors import ConfigError

    monkeypatch.setenv("CRITICLOOP_TRAINING__DEVICE_HOUR_PRICE", price)
    with pytest.raises(ConfigError):
        Settings.load(env_file=None)
