"""The data files the benchmarks read, written for this project: bench/nights_prompts.jsonl (the
multi-night benchmark's prompts and its evaluation slice) and bench/if_probe.jsonl (the
instruction-following probe). A broken row would only show up an hour into a benchmark run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml
from criticloop.store import Prompt, read_labelled_pairs

BENCH = Path(__file__).resolve().parents[1] / "bench"
DEMO = Path(__file__).resolve().parents[1] / "store" / "demo"


def test_the_nights_prompts_are_valid_and_keep_a_stratified_evaluation_slice():
    rows = [json.loads(line) for line in (BENCH / "nights_prompts.jsonl").read_text().splitlines()]
    prompts = [Prompt.model_validate(r) for r in rows]
    assert len(rows) == 180 and len({r["id"] for r in rows}) == 180
    held = [r for r in rows if r["metadata"]["split"] == "eval"]
    assert {r["metadata"]["split"] for r in rows} == {"eval", "train"}
    assert Counter(r["task_type"] for r in held) == {
        "ad_insertion": 10, "retail_media_budget": 4, "creative": 4,
        "persona_chat": 4, "feedback_conversation": 4, "general": 4,
    }  # fmt: skip
    ads = [r for r in held if r["task_type"] == "ad_insertion"]
    assert Counter(r["metadata"]["ad_fit"] for r in ads) == {"good": 6, "poor": 4}
    demo = yaml.safe_load((DEMO / "brands.yaml").read_text())
    campaigns = {c["id"]: c["brand"] for c in demo["campaigns"]}
    brands = {b["id"] for b in demo["brands"]}
    for row in rows:
        assert row.get("campaign") is None or row["campaign"] in campaigns, row["id"]
        assert row.get("brand") is None or row["brand"] in brands, row["id"]
        if row.get("brand") and row.get("campaign"):
            assert campaigns[row["campaign"]] == row["brand"], row["id"]
    demo_texts = {
        Prompt.model_validate(json.loads(line)).conversation()[-1]["content"]
        for line in (DEMO / "prompts.jsonl").read_text().splitlines()
    }
    assert not demo_texts & {p.conversation()[-1]["content"] for p in prompts}


def test_the_instruction_following_probe_is_balanced_on_labels_and_on_length():
    pairs = read_labelled_pairs(BENCH / "if_probe.jsonl")
    assert len(pairs) == 96 and not pairs.skipped
    assert Counter(p.majority for p in pairs) == {"a": 48, "b": 48}
    chosen_shorter = sum(
        len(p.a if p.majority == "a" else p.b) < len(p.b if p.majority == "a" else p.a)
        for p in pairs
    )
    assert chosen_shorter == 48
