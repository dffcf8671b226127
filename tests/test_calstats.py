"""Calibration statistics: metrics on hand-computed examples, calibrators recovering known
distortions, exact intervals, the escalation guarantee over many simulated calibration sets,
and drift alarms on shifted and stationary streams."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from criticloop.reward._calstats import (
    Calibrator,
    accuracy,
    binomial_upper,
    brier,
    check_drift,
    choose_calibrator,
    clopper_pearson,
    coverage_at,
    ece,
    escalation_curve,
    fit_calibrator,
    log_loss,
    reliability,
    select_threshold,
    sigmoid,
    wilson,
    windows,
)

# --- metrics ------------------------------------------------------------------------------------


def test_brier_and_ece_on_a_hand_computed_example():
    p, y = [0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1]
    # (0.04 + 0.64 + 0.04 + 0.04) / 4
    assert brier(p, y) == pytest.approx(0.19)
    # bin of 0.2: observed 0.5, gap 0.3; bin of 0.8: observed 1.0, gap 0.2; half the items each
    assert ece(p, y) == pytest.approx(0.25)


def test_ece_is_the_known_gap_of_an_overconfident_model():
    # says 0.9 where 7 in 10 happen, 0.1 where 3 in 10 happen: 0.2 off in every bin
    p = [0.9] * 10 + [0.1] * 10
    y = [1] * 7 + [0] * 3 + [1] * 3 + [0] * 7
    assert ece(p, y) == pytest.approx(0.2)
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 1, 100_000)
    stated = np.clip(0.5 + 1.5 * (truth - 0.5), 0, 1)  # stretched away from 0.5
    y = rng.random(truth.size) < truth
    expected = np.mean(np.abs(stated - truth))  # fine bins: the mean pointwise gap
    assert ece(stated, y, bins=50) == pytest.approx(expected, abs=0.01)


def test_ece_of_a_calibrated_model_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = rng.random(p.size) < p
    assert ece(p, y) < 0.01
    assert brier(p, y) == pytest.approx(1 / 6, abs=0.005)  # E[p(1 - p)] for p ~ U(0, 1)


def test_log_loss_and_accuracy_by_hand():
    assert log_loss([0.8, 0.3], [1, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    # a certain miss costs -log(eps), not infinity
    assert log_loss([0.0, 1.0], [1, 0], eps=1e-6) == pytest.approx(-math.log(1e-6))
    # right, coin toss, wrong, wrong
    assert accuracy([0.9, 0.5, 0.2, 0.6], [1, 1, 1, 0]) == pytest.approx(0.375)


def test_reliability_bins_hold_the_items_they_should():
    rows = reliability([0.0, 0.05, 0.15, 0.15, 0.3, 1.0], [0, 0, 1, 0, 1, 1], bins=10)
    assert len(rows) == 10
    # scikit-learn's bins: (lo, hi], the first one closed
    assert [r["n"] for r in rows] == [2, 2, 1, 0, 0, 0, 0, 0, 0, 1]
    assert rows[0] == {"lo": 0.0, "hi": 0.1, "n": 2, "mean_p": 0.025, "observed": 0.0}
    assert rows[1]["mean_p"] == pytest.approx(0.15) and rows[1]["observed"] == 0.5
    assert rows[2]["hi"] == 0.3 and rows[2]["mean_p"] == pytest.approx(0.3)  # p = 0.3 closes it
    assert rows[3]["mean_p"] is None and rows[3]["observed"] is None
    assert rows[9]["hi"] == 1.0 and rows[9]["observed"] == 1.0
    assert [r["n"] for r in reliability([], [], bins=4)] == [0, 0, 0, 0]


# --- calibrators --------------------------------------------------------------------------------


def _labels(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    return (rng.random(probabilities.size) < probabilities).astype(float)


def test_temperature_recovers_the_true_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, 20_000)
    fitted = fit_calibrator("temperature", z, _labels(rng, sigmoid(z / 2.0)))
    assert fitted.params["T"] == pytest.approx(2.0, rel=0.06)


def test_platt_recovers_slope_and_intercept():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, 20_000)
    fitted = fit_calibrator("platt", z, _labels(rng, sigmoid(0.5 * z - 0.7)))
    assert fitted.params["a"] == pytest.approx(0.5, abs=0.05)
    assert fitted.params["b"] == pytest.approx(-0.7, abs=0.08)


def test_weights_count_like_repeated_items():
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, 300)
    y = _labels(rng, sigmoid(z / 1.5))
    w = rng.integers(1, 4, z.size)
    weighted = fit_calibrator("temperature", z, y, weights=w)
    repeated = fit_calibrator("temperature", np.repeat(z, w), np.repeat(y, w))
    assert weighted.params["T"] == pytest.approx(repeated.params["T"], rel=1e-4)


def test_isotonic_is_monotone_and_never_certain():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, 2_000)
    fitted = fit_calibrator("isotonic", z, _labels(rng, sigmoid(z)))
    out = fitted.apply(np.linspace(-20, 20, 1_001))
    assert np.all(np.diff(out) >= 0)
    assert out.min() > 0 and out.max() < 1


@pytest.mark.parametrize("kind", ["none", "temperature", "platt", "isotonic"])
def test_calibrators_round_trip_through_json(kind):
    rng = np.random.default_rng(6)
    z = rng.normal(0, 2, 500)
    fitted = fit_calibrator(kind, z, _labels(rng, sigmoid(z / 1.7)))
    restored = Calibrator.from_dict(json.loads(json.dumps(fitted.as_dict())))
    grid = np.linspace(-10, 10, 201)
    assert restored.kind == kind
    assert np.array_equal(restored.apply(grid), fitted.apply(grid))


def test_unknown_calibrator_kind_is_refused():
    with pytest.raises(ValueError, match="unknown calibrator kind"):
        fit_calibrator("beta", [0.0, 1.0], [0, 1])


def test_choose_calibrator_prefers_isotonic_on_a_step_distortion():
    rng = np.random.default_rng(7)
    z = rng.normal(0, 2, 3_000)
    truth = np.where(z > 0, 0.75, 0.25)  # a step with flat sides: no sigmoid has that shape
    best, losses = choose_calibrator(z, _labels(rng, truth), seed=0)
    assert best == "isotonic"
    assert losses[best] <= min(losses.values())
    assert set(losses) == {"temperature", "platt", "isotonic"}


def test_choose_calibrator_prefers_a_sigmoid_on_a_temperature_distortion():
    rng = np.random.default_rng(8)
    z = rng.normal(0, 3, 3_000)
    y = _labels(rng, sigmoid(z / 2.5))
    best, losses = choose_calibrator(z, y, seed=0)
    assert best in {"temperature", "platt"}
    assert losses[best] <= min(losses.values())
    assert choose_calibrator(z, y, seed=0) == (best, losses)  # fixed by the seed


def test_choose_calibrator_keeps_each_group_in_one_fold(monkeypatch):
    """Both orders of a pair are one group: a fold never fits on one and scores the other."""
    from criticloop.reward import _calstats

    rng = np.random.default_rng(9)
    z = rng.normal(0, 2, 200)
    y = _labels(rng, sigmoid(z))
    z_aug, y_aug = np.concatenate([z, -z]), np.concatenate([y, 1 - y])
    pair = np.concatenate([np.arange(200), np.arange(200)])
    fitted_on: list[set[float]] = []
    real_fit = _calstats.fit_calibrator

    def spy(kind, zs, ys, weights=None):
        fitted_on.append(set(np.round(zs, 12)))
        return real_fit(kind, zs, ys, weights)

    monkeypatch.setattr(_calstats, "fit_calibrator", spy)
    choose_calibrator(z_aug, y_aug, groups=pair, kinds=("temperature",), seed=0)
    assert len(fitted_on) == 5
    for train in fitted_on:
        # every pair is in or out whole: z in the training set exactly when -z is
        assert all(round(-v, 12) in train for v in train)
    fitted_on.clear()
    choose_calibrator(z_aug, y_aug, kinds=("temperature",), seed=0)  # each row its own group
    assert any(any(round(-v, 12) not in train for v in train) for train in fitted_on)
    with pytest.raises(ValueError, match="5 groups"):
        choose_calibrator(z_aug[:8], y_aug[:8], groups=[0, 1, 2, 3] * 2, seed=0)


# --- intervals ----------------------------------------------------------------------------------


def test_exact_bounds_match_known_values():
    assert binomial_upper(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10))
    assert binomial_upper(10, 10, 0.05) == 1.0
    assert binomial_upper(0, 0, 0.05) == 1.0
    assert clopper_pearson(0, 10, 0.05) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10, 0.05) == pytest.approx((0.025 ** (1 / 10), 1.0))
    assert clopper_pearson(5, 10, 0.05) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert clopper_pearson(0, 0, 0.05) == (0.0, 1.0)
    assert wilson(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_intervals_are_scipys(rng_seed=3):
    from scipy.stats import binomtest

    for k, n in ((0, 7), (3, 7), (7, 7), (41, 120)):
        exact = binomtest(k, n).proportion_ci(0.9, method="exact")
        assert clopper_pearson(k, n, 0.1) == pytest.approx((exact.low, exact.high), abs=1e-12)
        score = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((score.low, score.high), abs=1e-12)


# --- escalation ---------------------------------------------------------------------------------


def _judged(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence ~ U(0.5, 1) and agreement ~ Bernoulli(confidence): a calibrated model, so the
    true agreement at or above a threshold t is E[c | c >= t] = (1 + t) / 2."""
    confidence = rng.uniform(0.5, 1.0, n)
    return confidence, _labels(rng, confidence)


def test_select_threshold_keeps_its_guarantee_over_many_calibration_sets():
    rng = np.random.default_rng(9)
    target, risk, draws = 0.8, 0.1, 400
    misses, coverages = 0, []
    for _ in range(draws):
        confidence, correct = _judged(rng, 500)
        chosen = select_threshold(confidence, correct, target=target, risk=risk)
        if chosen.threshold is not None and (1 + chosen.threshold) / 2 < target:
            misses += 1
        coverages.append(chosen.coverage)
    slack = 3 * math.sqrt(risk * (1 - risk) / draws)
    assert misses / draws <= risk + slack
    # the truth allows 80% coverage (t = 0.6); a useful threshold gets a fair part of it
    assert 0.5 < np.median(coverages) <= 0.8
    assert np.mean(np.array(coverages) == 0) < 0.15  # rarely ends before it starts


def test_select_threshold_reports_a_consistent_threshold():
    confidence, correct = _judged(np.random.default_rng(10), 2_000)
    chosen = select_threshold(confidence, correct, target=0.8, risk=0.1)
    above = confidence >= chosen.threshold
    assert chosen.auto == above.sum() and chosen.n == 2_000
    assert chosen.coverage == pytest.approx(above.mean())
    assert chosen.agreement == pytest.approx(correct[above].mean())
    assert chosen.target <= chosen.lower_bound <= chosen.agreement
    # the bound is scipy's exact one-sided Clopper-Pearson bound on the disagreements
    wrong = int(chosen.auto - correct[above].sum())
    assert chosen.lower_bound == pytest.approx(
        1 - binomial_upper(wrong, chosen.auto, 0.1), abs=1e-12
    )
    assert json.loads(json.dumps(chosen.as_dict()))["threshold"] == chosen.threshold


def test_an_unattainable_target_escalates_everything():
    confidence, correct = _judged(np.random.default_rng(11), 500)
    chosen = select_threshold(confidence, correct, target=0.999, risk=0.1)
    assert chosen.threshold is None and chosen.coverage == 0.0 and chosen.auto == 0
    # too few items to test at all
    few = select_threshold([0.9] * 5, [1] * 5, target=0.5, risk=0.1, min_auto=10)
    assert few.threshold is None


def test_fixed_sequence_stops_at_the_first_failure():
    # perfect at the top, all wrong just below, perfect again far below: pooled, the lowest
    # threshold would pass, but the sequence ended at the failure in between
    confidence = [0.99] * 30 + [0.9] * 30 + [0.8] * 1_000
    correct = [1] * 30 + [0] * 30 + [1] * 1_000
    chosen = select_threshold(confidence, correct, target=0.8, risk=0.1)
    assert chosen.threshold == 0.99 and chosen.auto == 30


def test_coverage_at_takes_the_largest_share_meeting_the_target():
    confidence, correct = [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1]
    # agreement from the top: 1, 1, 2/3, 3/4
    assert coverage_at(confidence, correct, 0.7) == {
        "target": 0.7,
        "coverage": 1.0,
        "auto": 4,
        "agreement": 0.75,
        "threshold": 0.6,
    }
    assert coverage_at(confidence, correct, 0.8)["threshold"] == 0.8
    assert coverage_at(confidence, correct, 0.8)["coverage"] == 0.5
    assert coverage_at(confidence, correct, 1.01)["threshold"] is None


def test_escalating_doubt_beats_escalating_at_random_when_confidence_means_something():
    confidence, correct = _judged(np.random.default_rng(12), 2_000)
    curve = escalation_curve(confidence, correct)
    assert [row["budget"] for row in curve] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert curve[0]["uncertainty"] == pytest.approx(curve[0]["random"])
    for row in curve[1:]:
        assert row["escalated"] + row["auto"] == 2_000
        assert row["uncertainty"] > row["random_hi"]
        assert row["random_lo"] <= row["random"] <= row["random_hi"]


def test_escalating_doubt_is_no_better_than_chance_when_confidence_means_nothing():
    rng = np.random.default_rng(13)
    confidence = rng.uniform(0.5, 1.0, 2_000)
    correct = _labels(rng, np.full(2_000, 0.75))  # independent of confidence
    for row in escalation_curve(confidence, correct, seed=1)[1:]:
        width = row["random_hi"] - row["random_lo"]
        assert abs(row["uncertainty"] - row["random"]) <= width


# --- drift --------------------------------------------------------------------------------------


def _window(rng: np.random.Generator, rate: float, n: int = 100):
    return _labels(rng, np.full(n, rate)), np.full(n, 0.8)


def test_drift_fires_when_agreement_falls():
    rng = np.random.default_rng(14)
    rates = [0.8, 0.8, 0.8, 0.55, 0.55, 0.55]
    checks = []
    for i, rate in enumerate(rates):
        correct, confidence = _window(rng, rate)
        checks.append(
            check_drift(
                f"2026-W{40 + i}", correct, confidence, reference_agreement=0.8, reference_n=500
            )
        )
    assert [c.fired for c in checks] == [False, False, False, True, True, True]
    assert checks[0].why == "stable"
    assert checks[-1].delta < -0.1 and checks[-1].calibration_gap > 0.1
    assert checks[-1].why.startswith("agreement 0.")
    assert "vs 0.80 at calibration" in checks[-1].why and "p=" in checks[-1].why
    assert json.loads(json.dumps(checks[-1].as_dict()))["window"] == "2026-W45"


def test_drift_stays_quiet_on_a_stationary_stream():
    rng = np.random.default_rng(15)
    alpha, windows_run = 0.05, 200
    alarms = 0
    for i in range(windows_run):
        correct, confidence = _window(rng, 0.8)
        check = check_drift(
            str(i), correct, confidence, reference_agreement=0.8, reference_n=500, alpha=alpha
        )
        alarms += check.fired
    assert alarms / windows_run <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / windows_run)


def test_drift_against_an_exact_reference_and_on_stated_confidence():
    rng = np.random.default_rng(16)
    correct = _labels(rng, np.full(200, 0.6))
    fell = check_drift("w", correct, None, reference_agreement=0.85, reference_n=None)
    assert fell.fired and "CI" in fell.why and fell.calibration_gap is None
    # agreement as at calibration, but the model claims far more than it delivers
    overclaims = check_drift(
        "w", correct, np.full(200, 0.95), reference_agreement=0.6, reference_n=None
    )
    assert overclaims.fired and overclaims.why.startswith("stated confidence 0.95")


def test_small_windows_never_fire():
    check = check_drift(
        "w", [0] * 12, [0.99] * 12, reference_agreement=0.9, reference_n=1_000, min_n=20
    )
    assert not check.fired and check.why == "too few decisions (12 < 20)"
    assert check.agreement == 0.0  # still reported
    empty = check_drift("w", [], [], reference_agreement=0.9, reference_n=1_000)
    assert not empty.fired and empty.agreement is None


def test_windows_label_timestamps_in_utc():
    stamps = ["2026-11-22T10:00:00Z", "2026-11-23T00:30:00+02:00", "2027-01-01"]
    assert windows(stamps) == ["2026-W47", "2026-W47", "2026-W53"]
    assert windows(stamps, period="day") == ["2026-11-22", "2026-11-22", "2027-01-01"]
    assert windows(stamps, period="month") == ["2026-11", "2026-11", "2027-01"]
    with pytest.raises(ValueError, match="unknown period"):
        windows(stamps, period="fortnight")
