"""The learned reward aggregator, the calibrated escalation policy in the graph's routing,
and `criticloop calibrate` / `criticloop drift` end to end on labelled pairs the test makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from criticloop.graphs.routing import CalibratedPolicy, decide
from criticloop.reward import (
    FEATURES,
    Example,
    RewardModel,
    Routing,
    aggregate,
    fit_reward_model,
    pair_features,
)

WEIGHTS = {"helpfulness": 0.6, "coherence": 0.3, "compliance": 0.1}


def reward(
    cid: str, helpful: float, coherent: float, conf: float = 0.8, veto: bool = False, weights=None
):
    scores = {
        "helpfulness": {"score": helpful, "confidence": conf},
        "coherence": {"score": coherent, "confidence": conf},
        "compliance": {
            "score": 0.0 if veto else 1.0,
            "confidence": 1.0,
            "veto": veto,
            "evidence": {"violations": [{"rule": "banned_claim"}] if veto else []},
        },
    }
    return aggregate(cid, scores, weights or WEIGHTS)


def synthetic(n: int, seed: int, slope: float = 5.0) -> list[Example]:
    """People follow helpfulness (and a little coherence) with logistic noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ha, hb, ca, cb = rng.uniform(0, 1, 4)
        a, b = reward("a", ha, ca), reward("b", hb, cb)
        p = 1 / (1 + np.exp(-(slope * (ha - hb) + (ca - cb))))
        out.append(
            Example(
                key=f"{seed}-{i}",
                group=f"p{i // 2}",
                x=pair_features(a, b, WEIGHTS),
                y=int(rng.uniform() < p),
                length_diff=int(rng.integers(-40, 40)),
            )
        )
    return out


def test_features_change_sign_when_the_candidates_swap():
    a, b = reward("a", 0.9, 0.4, conf=0.6), reward("b", 0.2, 0.7, veto=True)
    forward, backward = pair_features(a, b, WEIGHTS), pair_features(b, a, WEIGHTS)
    assert np.allclose(forward, -backward)
    assert forward[FEATURES.index("veto")] == 1.0  # B is vetoed: the feature favours A
    assert forward[FEATURES.index("diff:helpfulness")] == pytest.approx(0.7)
    assert forward[FEATURES.index("sure_diff:helpfulness")] == pytest.approx(0.7 * 0.6)


def test_fitted_model_is_order_free_calibrated_and_round_trips():
    fit = fit_reward_model(synthetic(800, seed=1), target=0.8, risk=0.1, seed=0)
    model = fit.model
    a, b = reward("a", 0.8, 0.5), reward("b", 0.3, 0.6)
    p_ab, p_ba = model.prefer(a, b, WEIGHTS), model.prefer(b, a, WEIGHTS)
    assert p_ab > 0.7
    assert p_ab + p_ba == pytest.approx(1.0, abs=0.03)  # isotonic is only nearly symmetric
    clone = RewardModel.from_dict(json.loads(json.dumps(model.as_dict())))
    assert clone.prefer(a, b, WEIGHTS) == pytest.approx(p_ab)

    cv, held = fit.report["cross_validated"], fit.report["held_out"]
    assert cv["model"]["accuracy"] > cv["length"]["accuracy"] + 0.15  # length is noise here
    assert cv["model"]["ece"] < 0.06 and held["model"]["ece"] < 0.1
    assert set(cv["calibrator_log_loss"]) == {"temperature", "platt", "isotonic"}
    losses = cv["calibrator_log_loss"]  # rounded to 4 places: a near-tie may round level
    assert losses[cv["calibrator"]] == min(losses.values())
    split = fit.report["split"]
    assert split["fit"] + split["calibration"] == 800 and 180 < split["calibration"] < 320


def test_threshold_from_the_calibration_split_meets_the_target_on_fresh_pairs():
    """The policy chosen on the held-out split keeps its promise on 4000 pairs it never saw."""
    fit = fit_reward_model(synthetic(900, seed=2), target=0.8, risk=0.1, seed=0)
    policy = fit.threshold
    assert policy.threshold is not None and 0.2 < policy.coverage < 1
    assert policy.agreement >= policy.lower_bound >= 0.8 - 1e-9
    fresh = synthetic(4000, seed=3)
    p = fit.model.predict(np.array([e.x for e in fresh]))
    y = np.array([e.y for e in fresh])
    auto = np.maximum(p, 1 - p) >= policy.threshold
    assert ((p[auto] >= 0.5) == (y[auto] == 1)).mean() >= 0.8
    # escalating by uncertainty beats escalating at random for every budget
    for row in fit.report["escalation"][1:]:
        assert row["uncertainty"] > row["random"]


def test_an_unreachable_target_gives_no_threshold():
    fit = fit_reward_model(synthetic(300, seed=4, slope=0.5), target=0.95, risk=0.05, seed=0)
    assert fit.threshold.threshold is None and fit.threshold.coverage == 0


def _policy(model: RewardModel, threshold: float) -> CalibratedPolicy:
    return CalibratedPolicy(
        version="rm-1",
        model=model,
        threshold=threshold,
        target=0.8,
        risk=0.1,
        task_types=frozenset({"general"}),
        critic_versions={"helpfulness": "local:v1", "coherence": "local:v1"},
    )


def test_calibrated_policy_decides_confident_pairs_and_escalates_the_rest():
    model = fit_reward_model(synthetic(600, seed=5), target=0.8, risk=0.1).model
    routing = Routing(pair_margin=0.5, min_confidence=0.3)  # the profile alone would escalate
    clear = [reward("a", 0.95, 0.6), reward("b", 0.1, 0.6)]
    close = [reward("a", 0.55, 0.6), reward("b", 0.5, 0.6)]
    policy = _policy(model, threshold=0.8)
    for rewards, route in ((clear, "pair"), (close, "escalate")):
        base = decide(rewards, WEIGHTS, routing)
        decided = policy.decide(base, rewards, WEIGHTS)
        assert decided.route == route, decided.reason
        assert decided.reward_model == "rm-1" and "calibrated confidence" in decided.reason
    assert policy.decide(decide(clear, WEIGHTS, routing), clear, WEIGHTS).chosen == "a"
    # the model may overrule the profile's pick: chosen is whom people would prefer
    coherence_first = {"helpfulness": 0.05, "coherence": 0.9, "compliance": 0.05}
    flipped = [
        reward("a", 0.05, 0.7, weights=coherence_first),
        reward("b", 0.95, 0.5, weights=coherence_first),
    ]
    base = decide(flipped, coherence_first, routing)
    assert base.chosen == "a"
    decided = policy.decide(base, flipped, WEIGHTS)
    assert decided.chosen == "b" and decided.p_chosen > 0.5


def test_calibrated_policy_only_judges_what_it_learned_from():
    policy = _policy(fit_reward_model(synthetic(300, seed=6), target=0.8, risk=0.1).model, 0.8)
    same = {"helpfulness": "local:v1", "coherence": "local:v1"}
    assert policy.applies("general", same, {"helpfulness": 1, "coherence": 1}) is None
    assert "no ad_insertion pairs" in policy.applies("ad_insertion", same, WEIGHTS)
    changed = {"helpfulness": "crew:v1", "coherence": "local:v1"}
    assert "now runs as crew:v1" in policy.applies("general", changed, {"helpfulness": 1})


# ---- criticloop calibrate end to end -----------------------------------------------------------

THINGS = [
    "tomato plant", "bicycle chain", "cast iron pan", "leather jacket", "sourdough starter",
    "wooden deck", "goldfish tank", "laptop battery", "rose bush", "running shoes",
    "kitchen knife", "wool sweater", "houseplant", "car windshield", "garden hose",
]  # fmt: skip
SEASONS = ["winter", "summer", "spring", "autumn"]
UNHELPFUL = [
    "I am not sure. Maybe ask someone else.",
    "The history of the printing press goes back many centuries.",
    "No.",
    "Bananas are yellow and grow in bunches on large plants.",
]


def labelled_rows(n: int) -> list[dict]:
    """Pairs where people prefer the on-topic, useful answer (one in eleven labels flipped)."""
    rows = []
    for i in range(n):
        thing, season = THINGS[i % len(THINGS)], SEASONS[(i // len(THINGS)) % len(SEASONS)]
        good = (
            f"To care for a {thing} in {season}, clean it gently, keep it dry and sheltered, "
            f"and check it every week so small problems with the {thing} do not grow."
        )
        bad = UNHELPFUL[i % len(UNHELPFUL)]
        good_is_a = i % 2 == 0
        label = "a" if good_is_a else "b"
        if i % 11 == 5:
            label = "b" if label == "a" else "a"
        rows.append(
            {
                "id": f"care-{i}",
                "prompt": f"How do I look after my {thing} in {season}?",
                "a": good if good_is_a else bad,
                "b": bad if good_is_a else good,
                "label": label,
            }
        )
    return rows


def write_profiles(tmp_path, **calibration) -> str:
    import re

    from criticloop.reward import DEFAULT_PROFILES

    text = DEFAULT_PROFILES.read_text()
    for key, value in calibration.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return str(path)


def test_calibrate_with_too_little_data_says_how_much_more_and_keeps_the_profile(
    hermetic, tmp_path
):
    from tests.conftest import run_cli

    labels = tmp_path / "few.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows(12)))
    run_cli("init", "--no-demo", check=True)
    run_cli("labels", "import", str(labels), check=True)
    result = run_cli("calibrate")
    assert result.returncode == 0, result.stderr
    # one label in eleven is flipped, never tied: all 12 pairs are decisive
    assert "12 usable decisive labelled pairs; a reward model needs at least 100: 88 more" in (
        result.stdout
    )
    assert "profile's weights and thresholds stay in charge" in result.stdout
    listed = run_cli("calibrate", "--list", "--json", check=True)
    assert json.loads(listed.stdout) == []


@pytest.mark.slow
def test_calibrate_fits_versions_activates_and_the_graph_routes_by_it(
    model_home, tmp_path, monkeypatch, bundled_policy, bundled_embedder
):
    from criticloop.agents import Sampling, Signals
    from criticloop.graphs.run import RunOptions, build_critics, run_feedback
    from criticloop.reward import Profiles, calibrate, drift_report
    from criticloop.settings import Settings
    from criticloop.store import Store, read_labelled_pairs, read_records

    profiles = write_profiles(tmp_path, min_labels=40, target_agreement=0.75, risk=0.2)
    monkeypatch.setenv("CRITICLOOP_PROFILES", profiles)
    settings = Settings.load(env_file=None)
    labels = tmp_path / "care.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in labelled_rows(120)))
    with Store.open(settings.db_path) as store:
        store.import_labels(read_labelled_pairs(labels), "care")

    def signals():
        return Signals(bundled_embedder, bundled_policy)

    summary = calibrate(settings, load_signals=signals)
    assert summary["status"] == "active", summary.get("why")
    assert summary["version"] == "rm-1" and summary["examples"] == 120
    assert summary["scored_now"] == 240  # every imported response, once
    report = summary["report"]
    assert report["cross_validated"]["model"]["accuracy"] > 0.8
    assert report["held_out"]["n"] == report["split"]["calibration"] > 20
    assert report["policy"]["threshold"] is not None and report["policy"]["coverage"] > 0
    png = Path(summary["diagram"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = calibrate(settings, load_signals=lambda: pytest.fail("scores are kept"), seed=1)
    assert again["version"] == "rm-2" and again["scored_now"] == 0
    with Store.open(settings.db_path) as store:
        assert [m["status"] for m in store.reward_models()] == ["active", "retired"]
        store.activate_reward_model("rm-1")

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"new-{i}", "prompt": r["prompt"], "candidates": [r["a"], r["b"]]})
            + "\n"
            for i, r in enumerate(labelled_rows(60)[45:53])
        )
    )
    with Store.open(settings.db_path) as store:
        store.import_records(read_records(prompts))
    run = run_feedback(
        settings,
        RunOptions(sampling=Sampling(32, 0.0, 1.0, 0), candidates=2, concurrency=1, progress=False),
        load_policy=lambda: bundled_policy,
        load_embedder_fn=lambda: bundled_embedder,
    )
    assert run["prompts"] == 8  # the imported labelled prompts are not the graph's work
    assert run["reward_model"]["version"] == "rm-1"
    assert sum(run["reward_model"]["decisions"]["rm-1"].values()) == 8, run["reward_model"]
    with Store.open(settings.db_path) as store:
        decisions = [store.get_decision(run["run_id"], f"new-{i}") for i in range(8)]
        assert {d["reward_model"] for d in decisions} == {"rm-1"}
        assert all("calibrated confidence" in d["reason"] for d in decisions)
        paired = [d for d in decisions if d["outcome"] == "pair"]
        assert paired, [d["reason"] for d in decisions]
        for d in paired:  # the on-topic answer is chosen
            chosen = store.get_generation(d["chosen_generation_id"])["text"]
            assert chosen.startswith("To care for")
        config = store.get_run(run["run_id"])["config"]
        assert config["reward_model"] == "rm-1"
        loaded = Profiles.load(profiles)
        drift = drift_report(store, loaded, build_critics(loaded))
    assert drift["model"] == "rm-1" and drift["decisions"] == 0 and not drift["flags"]


# ---- drift over the store's decisions -------------------------------------------------------------


def test_drift_groups_flag_a_shifted_week_and_not_a_steady_one():
    """Without a model each week is checked against the pooled earlier weeks."""
    from criticloop.reward._drift import _Checker

    rng = np.random.default_rng(7)
    steady = (rng.uniform(size=400) < 0.8).astype(int)
    shifted = np.concatenate([steady[:300], (rng.uniform(size=100) < 0.5).astype(int)])
    weeks = [f"2026-W{40 + i // 100}" for i in range(400)]
    quiet = _Checker(steady, None, threshold=0.1, min_n=20).groups(weeks, sequential=True)
    loud = _Checker(shifted, None, threshold=0.1, min_n=20).groups(weeks, sequential=True)
    assert [c["fired"] for c in quiet] == [False] * 4
    assert [c["fired"] for c in loud] == [False, False, False, True]
    assert "agreement" in loud[-1]["why"] and loud[-1]["ci"][1] < 0.7
    # with a model: a week where people agree far less than the stated confidence
    conf = np.full(400, 0.9)
    checks = _Checker(shifted, conf, threshold=0.1, min_n=20).groups(weeks)
    assert checks[-1]["fired"] and "stated confidence 0.90" in checks[-1]["why"]


def test_stats_screen_draws_the_reliability_bins_and_flags():
    from criticloop.tui._screens import calibration_markup

    lines = calibration_markup(
        {
            "model": {
                "version": "rm-3",
                "labels": 400,
                "created_at": "2026-11-22T00:00:00+00:00",
                "policy": {
                    "threshold": 0.81,
                    "coverage": 0.55,
                    "lower_bound": 0.8,
                    "risk": 0.1,
                    "target": 0.8,
                },
                "held_out": {
                    "n": 120,
                    "model": {"accuracy": 0.78, "ece": 0.04, "brier": 0.16},
                    "length": {"accuracy": 0.66},
                },
                "reliability": [
                    {"lo": 0.5, "hi": 0.6, "n": 30, "mean_p": 0.55, "observed": 0.5},
                    {"lo": 0.6, "hi": 0.7, "n": 0, "mean_p": None, "observed": None},
                ],
                "diagram": "/x.png",
            },
            "fitted": 3,
            "drift": {
                "window": "week",
                "basis": "people vs rm-3's stated confidence",
                "windows": [
                    {
                        "window": "2026-W47",
                        "n": 40,
                        "agreement": 0.5,
                        "ci": [0.35, 0.65],
                        "fired": True,
                        "why": "stated confidence 0.85 vs agreement 0.50",
                    },
                ],  # fmt: skip
                "flags": ["window 2026-W47: stated confidence 0.85 vs agreement 0.50"],
            },
        }
    )
    text = "\n".join(lines)
    assert "rm-3 on 400 labelled pairs" in text and "(longer wins 66.0%)" in text
    assert "0.5-0.6  0.55" in text and "0.6-0.7" not in text  # empty bins are left out
    assert "SHIFT" in text and "flag" in text
    assert max(len(line) for line in lines if "[" not in line) <= 80  # an 80-column terminal


def test_drift_report_flags_the_week_people_stopped_agreeing(store, settings, tmp_path):
    """Decisions made in the reviewer app, three weeks of them: people agree with the
    critics' pick in the first two, mostly not in the third. Scores are recorded at the
    critics' current versions as the graph would; the review times are set per week."""
    from criticloop.reward import Profiles, build_critics, drift_flags, drift_report
    from criticloop.store import SUPPLIED, CritiqueRecord, DecisionRecord, read_records

    profiles = Profiles.load(settings.profiles)
    critics = build_critics(profiles)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q-{i}", "prompt": f"Question {i}?", "candidates": ["A.", "B."]})
            + "\n"
            for i in range(90)
        )
    )
    store.import_records(read_records(prompts))
    run_id = store.start_run("graph", {"prompts": []})
    rng = np.random.default_rng(3)
    for i in range(90):
        gens = [g["id"] for g in store.generations_for(f"q-{i}")]
        for gen, helpful in zip(gens, (0.8, 0.4), strict=True):
            for name, value in (("helpfulness", helpful), ("coherence", 0.7), ("compliance", 1.0)):
                score = make_score(critics[name].version, value)
                store.record_critique(CritiqueRecord.of(gen, name, score, "local", run_id))
        store.record_decision(
            DecisionRecord(
                run_id=run_id,
                prompt_id=f"q-{i}",
                config_hash=SUPPLIED,
                outcome="escalated",
                status="waiting",
                reason="test",
                rewards={},
                chosen_generation_id=gens[0],
                rejected_generation_id=gens[1],
            )
        )
        week = i // 30  # 2026-W45, W46, W47
        agree = rng.uniform() < (0.85 if week < 2 else 0.35)
        store.record_verdict(f"{run_id}/q-{i}", "ana", "a" if agree else "b")
        stamp = f"2026-11-{3 + 7 * week:02d}T12:00:00.000+00:00"
        store.db.execute(
            "UPDATE reviews SET created_at = ?, updated_at = ? WHERE decision_id = ?",
            [stamp, stamp, f"{run_id}/q-{i}"],
        )
    store.db.conn.commit()

    report = drift_report(store, profiles, critics)
    assert report["model"] is None and report["decisions"] == 90
    assert [w["window"] for w in report["windows"]] == ["2026-W45", "2026-W46", "2026-W47"]
    assert [w["fired"] for w in report["windows"]] == [False, False, True]
    assert report["windows"][2]["ci"][1] < 0.7 and report["flags"]
    flags = drift_flags(store, profiles, critics)
    assert flags["flagged"] and flags["latest"]["window"] == "2026-W47"
    assert flags["flags"][0].startswith("window 2026-W47: agreement")


def make_score(version: str, value: float):
    """A Score as a local critic returns it."""
    from criticloop.agents import Score

    return Score(
        dimension="x", score=value, confidence=0.8, rationale="test", critic_version=version
    )
