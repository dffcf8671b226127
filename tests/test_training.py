"""Training: the data it learns from, the registry, the gate's statistics, and real jobs.

The slow tests train real LoRA adapters on the bundled SmolLM2 for a few steps through the
installed CLI, on preference pairs the test writes itself (constructed pairs: a useful answer
chosen over a curt one), so they run without a feedback run first.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_after_first_checkpoint, run_cli, tiny_llama
from criticloop.errors import InputError
from criticloop.settings import GateSettings, Settings
from criticloop.store import PairRecord, Store
from criticloop.training import is_heldout, load_preferences, sign_test
from criticloop.training._gate import GateReport, bootstrap_interval, outcome, score_outcomes
from criticloop.training._jobs import failure_reason, resolve_launcher, worker_command

TINY_DPO = ("--max-steps", "2", "--batch-size", "2", "--save-steps", "1")


# ---- the gate's statistics on constructed outcomes ---------------------------------------------


def test_sign_test_matches_the_binomial_tail():
    # P(X >= 8 | n = 10, p = 1/2) = (45 + 10 + 1) / 1024
    assert sign_test(8, 2) == pytest.approx(56 / 1024)
    assert sign_test(5, 5) == pytest.approx(638 / 1024)  # (252 + 210 + 120 + 45 + 10 + 1) / 1024
    assert sign_test(0, 0) == 1.0
    assert sign_test(10, 0) == pytest.approx(1 / 1024)


def test_bootstrap_interval_resamples_whole_prompts():
    assert bootstrap_interval([[1.0, 1.0]] * 10, 500, seed=1) == (1.0, 1.0)
    assert bootstrap_interval([[1.0, 0.5]], 500, seed=1) == (0.75, 0.75)  # one prompt
    low, high = bootstrap_interval([[1.0], [0.0]] * 20, 2000, seed=1)
    assert low < 0.5 < high and high - low < 0.4
    # Ten prompts whose two answers always agree are ten observations, not twenty.
    clustered = bootstrap_interval([[1.0, 1.0], [0.0, 0.0]] * 5, 2000, seed=2)
    independent = bootstrap_interval([[1.0], [0.0]] * 10, 2000, seed=2)
    assert clustered[1] - clustered[0] > (independent[1] - independent[0]) * 0.9


def test_two_samples_that_agree_are_no_more_significant_than_one():
    # 8 prompts, 6 won and 2 lost; each prompt's two samples agree.
    outcomes = [1.0] * 6 + [0.0] * 2
    two = _report({f"p{i}": [o, o] for i, o in enumerate(outcomes)})
    one = _report({f"p{i}": [o] for i, o in enumerate(outcomes)})
    assert (two.comparisons, one.comparisons) == (16, 8)
    assert (two.prompts_better, two.prompts_worse) == (one.prompts_better, one.prompts_worse)
    assert two.p_value >= one.p_value
    assert two.p_value == pytest.approx(37 / 256, abs=1e-6)  # P(X >= 6 | n = 8): prompts
    assert two.ci_high - two.ci_low >= (one.ci_high - one.ci_low) * 0.9
    assert "sign test over prompts (6 better, 2 worse, 0 even)" in two.reason
    assert two.test.startswith("one-sided exact sign test over prompts")
    # counting the 16 comparisons as independent would have claimed p = 0.038
    assert sign_test(12, 4) < 0.05 < two.p_value and two.decision == "keep"


def test_the_gate_reports_its_power_at_the_effect_it_measured():
    from criticloop.training._gate import prompts_for_power, sign_test_power
    from scipy.stats import binom

    # 16 decisive prompts: p < 0.05 needs 12 or more better (P(X >= 12 | 0.5) = 0.038).
    assert sign_test_power(16, 0.5, 0.05) == pytest.approx(binom.sf(11, 16, 0.5))
    assert sign_test_power(16, 0.75, 0.05) == pytest.approx(binom.sf(11, 16, 0.75))
    assert sign_test_power(3, 1.0, 0.05) == 0.0  # 3 prompts can never reach p < 0.05
    need = prompts_for_power(0.75, 0.0, 0.05)
    assert sign_test_power(need, 0.75, 0.05) >= 0.8 > sign_test_power(need - 1, 0.75, 0.05)
    assert prompts_for_power(0.75, 0.5, 0.05) >= 2 * need - 1  # half the prompts even: twice
    assert prompts_for_power(0.5, 0.0, 0.05) is None
    report = _report({f"p{i}": [1.0 if i < 9 else 0.0] for i in range(12)})
    assert report.power == pytest.approx(sign_test_power(12, 0.75, 0.05), abs=1e-4)


def test_both_orders_must_agree_for_a_win():
    assert outcome(0.3, -0.3, 0.02) == (1.0, False)
    assert outcome(-0.3, 0.3, 0.02) == (0.0, False)
    assert outcome(0.01, -0.01, 0.02) == (0.5, False)
    # A judge that prefers whichever answer it reads first: a tie, and counted as inconsistent.
    assert outcome(0.3, 0.3, 0.02) == (0.5, True)


def _report(per_prompt, **gate) -> GateReport:
    return score_outcomes(GateReport("cand", None), per_prompt, GateSettings(**gate))


def test_gate_promotes_only_a_significant_win():
    wins = {f"p{i}": [1.0, 1.0 if i % 4 else 0.5] for i in range(12)}
    report = _report(wins)
    assert report.wins == 21 and report.ties == 3 and report.losses == 0
    assert report.prompts_better == 12 and report.p_value == pytest.approx(1 / 4096, abs=1e-6)
    assert report.p_value < 0.05 and report.ci_low > 0.5
    assert report.decision == "promote" and "significantly better" in report.reason

    narrow = {"p0": [1.0], "p1": [1.0], "p2": [0.0]}
    report = _report(narrow)
    assert report.win_rate == pytest.approx(2 / 3, abs=1e-4)
    assert report.decision == "keep" and "not significantly better" in report.reason
    assert _report(narrow, require="better").decision == "promote"
    assert _report({"p0": [0.0]}, require="better").decision == "keep"
    assert _report({"p0": [0.0]}, require="always").decision == "promote"
    assert _report({}).decision == "keep"


def _compared(
    n: int,
    *,
    critics: float = 1.0,
    words: tuple[int, int] = (40, 40),
    rules: tuple[int, int] = (0, 0),
    independent: tuple[float, float] | None = None,
    kl: float = 0.5,
):
    """A judged comparison of ``n`` prompts (one sample each), constructed: the candidate's
    critic outcome, both sides' lengths, how many answers of each side break a hard rule, and
    the independent judge's scores."""
    from criticloop.training._compare import Answer, Compared, Comparison

    rows = []
    for i in range(n):
        sides = []
        for side, (w, broken) in enumerate(zip(words, rules, strict=True)):
            score = None if independent is None else independent[side]
            sides.append(
                Answer(
                    text="word " * w,
                    reward=0.7,
                    rules=("banned_claim",) if i < broken else (),
                    words=w,
                    competitor=False,
                    ad=None,
                    independent=score,
                )
            )
        ind = None
        if independent is not None:
            ind = (
                1.0
                if independent[0] > independent[1]
                else 0.0
                if independent[0] < independent[1]
                else 0.5
            )
        rows.append(
            Compared(f"p{i}", 0, "general", False, sides[0], sides[1], critics, False, 0.2, ind, kl)
        )
    return Comparison(rows, "rm:test" if independent is not None else None)


def _filled(comparison, **gate) -> GateReport:
    from criticloop.training._gate import fill_report

    return fill_report(GateReport("cand", None), comparison, GateSettings(**gate))


def test_the_gate_refuses_an_adapter_whose_answers_break_more_hard_rules():
    clean = _filled(_compared(12))
    assert clean.decision == "promote" and clean.candidate_stats["violations"] == 0
    worse = _filled(_compared(12, rules=(3, 1)))  # wins every prompt, but breaks more rules
    assert worse.win_rate == 1.0 and worse.p_value < 0.05
    assert (
        worse.decision == "keep"
        and "break hard rules more often (3 of 12 against 1" in worse.reason
    )
    assert worse.candidate_stats["rules"] == {"banned_claim": 3}
    assert _filled(_compared(12, rules=(3, 1)), max_violation_rise=2).decision == "promote"
    assert _filled(_compared(12, rules=(3, 1)), violation_guard=False).decision == "promote"
    assert _filled(_compared(12, rules=(3, 1)), require="always").decision == "keep"
    assert _filled(_compared(12, rules=(1, 3))).decision == "promote"  # fewer: fine


def test_drift_is_flagged_when_length_or_kl_grows_without_an_independent_gain():
    steady = _filled(_compared(12, words=(44, 40), independent=(0.5, 0.5)))
    assert steady.flags == [] and steady.kl == 0.5
    longer = _filled(_compared(12, words=(60, 40), independent=(0.5, 0.5)))
    assert longer.decision == "promote"  # a flag, not a refusal
    (flag,) = longer.flags
    assert "answers +50% longer (40 -> 60 words; bound +25%)" in flag
    assert "independent judge (rm:test) does not find it better (win rate 50%" in flag
    assert longer.independent["win_rate"] == 0.5 and longer.independent["prompts_even"] == 12
    really_better = _filled(_compared(12, words=(60, 40), independent=(0.8, 0.4)))
    assert really_better.flags == [] and really_better.independent["p_value"] < 0.05
    (drifted,) = _filled(_compared(12, independent=(0.5, 0.5), kl=9.0)).flags
    assert "KL from the baseline 9.0 nats per answer (bound 5)" in drifted
    (blind,) = _filled(_compared(12, words=(60, 40))).flags
    assert "no independent judge" in blind and "CRITICLOOP_GATE__INDEPENDENT" in blind
    assert _filled(_compared(12, words=(60, 40)), max_length_growth=1.0).flags == []


def test_jobs_show_the_gate_decision_and_its_drift_flags(hermetic):
    run_cli("init", "--no-demo", check=True)
    with Store.open(Settings.load(env_file=None).db_path, create=False) as store:
        store.start_job(
            job_id="train-x", method="dpo", launcher="inprocess", base_model="m",
            parent_version=None, config={}, data_hash="h", examples=9, output_dir="/tmp/x",
            log_path="/tmp/x/log",
        )  # fmt: skip
        store.record_adapter("v1", base_model="m", method="dpo", path="/tmp/x", metrics={})
        store.finish_job("train-x", "done", adapter_version="v1")
        report = {"flags": ["answers +50% longer (40 -> 60 words; bound +25%), while ..."]}
        store.record_gate_report("v1", None, "promote", "better", report)
    out = run_cli("jobs", check=True).stdout
    assert "gate: promote" in out and "DRIFT answers +50% longer" in out
    (job,) = json.loads(run_cli("jobs", "--json", check=True).stdout)
    assert job["gate"] == {"decision": "promote", "flags": report["flags"]}


# ---- the data ----------------------------------------------------------------------------------


def test_heldout_split_is_stable_and_near_its_share():
    ids = [f"prompt-{i}" for i in range(2000)]
    held = [i for i in ids if is_heldout(i, 20)]
    assert 0.17 < len(held) / len(ids) < 0.23
    assert held == [i for i in ids if is_heldout(i, 20)]
    assert not any(is_heldout(i, 0) for i in ids)


def add_constructed_pairs(store: Store) -> int:
    """A useful answer chosen over a curt one for every demo prompt (constructed, not judged)."""
    count = 0
    for pid in store.prompt_ids():
        request = store.get_prompt(pid)["text"]
        chosen = f"Here is a clear answer to your question about {request[:60].lower()}"
        store.record_pair(PairRecord(pid, chosen, "No.", "synthetic", margin=0.4))
        count += 1
    return count


def test_preferences_weight_sources_and_keep_heldout_prompts_out(demo_store):
    add_constructed_pairs(demo_store)
    first = demo_store.prompt_ids()[0]
    demo_store.record_pair(PairRecord(first, "A person preferred this.", "Not this.", "human"))
    data = load_preferences(demo_store, {"synthetic": 1.0, "human": 3.0}, heldout_percent=20)
    held = [pid for pid in demo_store.prompt_ids() if is_heldout(pid, 20)]
    assert held and data.skipped["held out for the gate"] == len(held) + is_heldout(first, 20)
    assert sorted(set(data.weights)) == ([1.0] if is_heldout(first, 20) else [1.0, 3.0])
    row = data.rows[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    # The prompt is what the policy answered: the stored turns plus the task's system message.
    assert row["prompt"][0]["role"] == "system"

    no_synthetic = load_preferences(demo_store, {"synthetic": 0.0, "human": 3.0}, 20)
    assert no_synthetic.sources["synthetic"] == 0
    assert no_synthetic.data_hash != data.data_hash


def test_unknown_pair_sources_are_refused_when_settings_load():
    from criticloop.errors import ConfigError
    from criticloop.settings import Settings

    with pytest.raises(ConfigError, match="SOURCE_WEIGHTS: unknown source 'robots'"):
        Settings.load(env_file=None, training={"source_weights": {"robots": 1.0}})
    with pytest.raises(ConfigError, match="0 or more"):
        Settings.load(env_file=None, training={"source_weights": {"human": -1.0}})


# ---- registry and jobs -------------------------------------------------------------------------


def test_promote_and_rollback_walk_back_through_what_was_in_service(store):
    for version in ("v1", "v2", "v3"):
        store.record_adapter(
            version, base_model="m", method="dpo", path=f"/a/{version}", metrics={}
        )
    assert store.promoted_adapter("m") is None
    assert store.promote_adapter("v1", "test") is None
    assert store.promote_adapter("v2", "test") == "v1"
    assert store.get_adapter("v1")["status"] == "retired"
    store.reject_adapter("v3", "lost")
    assert store.get_adapter("v3")["status"] == "rejected"
    with pytest.raises(InputError):
        store.reject_adapter("v2", "in service")
    assert store.rollback_adapter("m") == ("v2", "v1")
    assert store.promoted_adapter("m")["version"] == "v1"
    assert store.rollback_adapter("m") == ("v1", None)
    assert store.promoted_adapter("m") is None
    with pytest.raises(InputError, match="already uses the base model"):
        store.rollback_adapter("m")


def test_a_job_whose_process_died_is_failed_and_resumable(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job = store.start_job(
        method="dpo",
        launcher="inprocess",
        base_model="m",
        parent_version=None,
        config={"key": "k1"},
        data_hash="d1",
        examples=3,
        output_dir="/x",
        log_path="/x/train.log",
    )
    store.db["training_jobs"].update(job, {"pid": dead.pid})
    assert store.resumable_job("dpo", "d1", "k1")["id"] == job
    assert store.get_job(job)["status"] == "failed"
    assert "killed" in store.get_job(job)["reason"]
    assert store.resumable_job("dpo", "d1", "other config") is None
    assert store.resumable_job("dpo", "other data", "k1") is None


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path):
    from criticloop.training._dpo import last_checkpoint
    from criticloop.training._jobs import has_checkpoint

    assert last_checkpoint(str(tmp_path)) is None and not has_checkpoint(tmp_path)
    for step in (1, 2, 10):
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    for step in (1, 2):
        (tmp_path / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint-10" / "trainer_state.json").write_text('{"glo')
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoints" / "checkpoint-2")
    assert has_checkpoint(tmp_path)


def test_failure_reasons_and_launchers(tmp_path):
    assert failure_reason(FloatingPointError("loss became nan at step 3")).startswith("NaN loss")
    assert failure_reason(RuntimeError("CUDA out of memory. Tried")).startswith("out of memory")
    assert resolve_launcher("auto", 0) == "inprocess"
    assert resolve_launcher("auto", 1) == "subprocess"
    assert resolve_launcher("auto", 4) == "accelerate"
    config = tmp_path / "fsdp.yaml"
    config.write_text("distributed_type: FSDP\n")
    command = worker_command("accelerate", tmp_path, config)
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(config)]
    assert command[-3:] == ["-m", "criticloop.training.worker", str(tmp_path)]
    with pytest.raises(InputError, match="does not exist"):
        worker_command("accelerate", tmp_path, tmp_path / "missing.yaml")


def _job_config(settings: Settings, launcher: str = "subprocess", **training):
    from criticloop.agents import ModelRef
    from criticloop.training import TrainConfig

    ref = ModelRef(name="base", source="/models/base")
    changes = settings.training.model_copy(update=training)
    return TrainConfig.build(settings, changes, ref, "cpu", launcher)


def test_the_job_config_nests_the_training_settings_and_keeps_the_registry_flat(settings):
    settings = settings.model_copy(
        update={"judge": settings.judge.model_copy(update={"api_key": "sk-very-secret"})}
    )
    config = _job_config(settings, learning_rate=1e-3)
    assert config.training.learning_rate == 1e-3 and config.training.launcher == "subprocess"
    record = config.as_dict()
    # Readers of adapters' and jobs' config (trained_spec, bench/nights.py) ask for these flat.
    assert record["learning_rate"] == 1e-3 and record["max_length"] == 1024
    assert record["method"] == "dpo" and record["key"] == config.key()
    assert record["judge"]["api_key"] is None and "very-secret" not in json.dumps(record)
    # What changes what is learned changes the key; where and under which name the job runs not.
    key = config.key()
    assert config.for_job("train-1", "/elsewhere").key() == key
    assert _job_config(settings, "accelerate", learning_rate=1e-3).key() == key
    assert _job_config(settings, learning_rate=1e-3, min_new_pairs=99).key() == key
    assert _job_config(settings, learning_rate=2e-3).key() != key
    # The judge's settings change what the RL methods learn, not what DPO learns.
    other_judge = settings.model_copy(update={"profiles": Path("/other/profiles.toml")})
    assert _job_config(other_judge, learning_rate=1e-3).key() == key
    ppo = _job_config(settings, method="ppo")
    assert _job_config(other_judge, method="ppo").key() != ppo.key()


def test_the_worker_trains_and_judges_with_config_json_not_its_environment(
    demo_store, settings, tmp_path, monkeypatch
):
    """The worker reads everything it trains and judges with from the job's config.json; a
    worker environment that says otherwise changes nothing. Only a secret (the judge's API key,
    never written to disk) comes from the environment."""
    from criticloop.reward import DEFAULT_PROFILES
    from criticloop.training import _online, worker
    from criticloop.training._data import training_prompts
    from criticloop.training._ppo import PPOSettings

    profile = tmp_path / "profiles.toml"
    profile.write_text(DEFAULT_PROFILES.read_text())
    launching = settings.model_copy(
        update={
            "profiles": profile,
            "judge": settings.judge.model_copy(
                update={"model": "openai/gpt-4o-mini", "api_key": "sk-launcher"}
            ),
            "generation": settings.generation.model_copy(update={"temperature": 0.6}),
        }
    )
    config = _job_config(launching, method="ppo", rl_steps=3, kl_coef=0.2, veto_penalty=-0.5)
    job_dir = settings.home / "training" / "train-test"
    config = config.for_job("train-test", job_dir)
    job_dir.mkdir(parents=True)
    config.write(job_dir / "config.json")
    prompt_ids = training_prompts(demo_store, settings.training.heldout_percent)[:2]
    (job_dir / "prompts.json").write_text(json.dumps(prompt_ids))
    assert "sk-launcher" not in (job_dir / "config.json").read_text()

    # The worker's environment disagrees with config.json on every count.
    elsewhere = tmp_path / "elsewhere"
    for name, value in {
        "CRITICLOOP_HOME": str(elsewhere),  # no store there
        "CRITICLOOP_PROFILES": str(tmp_path / "missing.toml"),  # no such file
        "CRITICLOOP_TRAINING__METHOD": "grpo",
        "CRITICLOOP_TRAINING__RL_STEPS": "99",
        "CRITICLOOP_TRAINING__KL_COEF": "0.9",
        "CRITICLOOP_TRAINING__VETO_PENALTY": "-3",
        "CRITICLOOP_GENERATION__TEMPERATURE": "1.5",
        "CRITICLOOP_JUDGE__MODEL": "anthropic/claude-sonnet-4-0",
        "CRITICLOOP_JUDGE__API_KEY": "sk-worker",
    }.items():
        monkeypatch.setenv(name, value)

    def settings_are_not_reread(*args, **kwargs):
        raise AssertionError("the worker read its settings from the environment")

    monkeypatch.setattr(Settings, "load", settings_are_not_reread)
    seen = {}

    def fake_ppo(config, prompt_ids, conversations, mixed, log):
        seen.update(config=config, judge=mixed.judge, conversations=conversations)
        seen["ppo"] = PPOSettings.from_config(config)
        (Path(config.output_dir) / "adapter").mkdir()
        return {"steps": 0}

    monkeypatch.setattr(_online, "run_ppo", fake_ppo)
    assert worker.main([str(job_dir)]) == 0

    assert json.loads((job_dir / "result.json").read_text())["reward"] == "critics"
    assert seen["config"] == config and len(seen["conversations"]) == 2
    ppo = seen["ppo"]
    assert (ppo.steps, ppo.kl_coef, ppo.temperature) == (3, 0.2, 0.6)
    judge = seen["judge"]
    assert judge.veto_penalty == -0.5
    assert judge.settings.home == settings.home and judge.settings.profiles == profile
    assert judge.settings.judge.model == "openai/gpt-4o-mini"
    assert judge.settings.judge.api_key.get_secret_value() == "sk-worker"
    assert not elsewhere.exists()


def test_the_job_callback_fails_a_nan_loss_and_skips_the_last_checkpoint():
    from criticloop.training._dpo import step_logger
    from transformers import TrainerControl

    seen = []
    callback = step_logger(seen.append)
    state = type("State", (), {"global_step": 4, "max_steps": 6})()
    callback.on_log(None, state, None, logs={"loss": 0.5})
    with pytest.raises(FloatingPointError, match="at step 4"):
        callback.on_log(None, state, None, logs={"loss": math.nan})
    assert seen == [{"step": 4, "loss": 0.5}]
    control = TrainerControl(should_save=True)
    callback.on_step_end(None, state, control)
    assert control.should_save  # a checkpoint on the way is kept
    state.global_step = 6
    callback.on_step_end(None, state, control)
    assert not control.should_save  # after the last step the adapter itself is saved


def test_train_with_no_pairs_says_how_to_get_some(hermetic):
    run_cli("init", check=True)
    result = run_cli("train", "--no-gate")
    assert result.returncode == 2
    assert "no preference pairs to train on" in result.stderr
    assert result.stderr.count("\n") == 1
    # said before any model is loaded: the bundled policy was never converted
    assert not (hermetic / "models" / "smollm2-135m-instruct").exists()


def test_qlora_without_a_gpu_is_refused_before_any_job(model_home):
    run_cli("init", check=True)
    result = run_cli("train", "--quantize", "4bit", "--no-gate")
    assert result.returncode == 2
    assert "needs a CUDA GPU" in result.stderr and result.stderr.count("\n") == 1
    assert json.loads(run_cli("jobs", "--json", check=True).stdout) == []


def test_the_gate_refuses_an_adapter_of_another_base_model(model_home):
    run_cli("init", check=True)
    with Store.open(model_home / "criticloop.db", create=False) as store:
        store.record_adapter("v-other", base_model="other", method="dpo", path="/x", metrics={})
    result = run_cli("adapters", "evaluate", "v-other")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "trained on other, but the policy is SmolLM2" in result.stderr
    assert run_cli("adapters", "evaluate", "v-missing").returncode == 2


# ---- real training ------------------------------------------------------------------------------


@pytest.fixture
def pairs_home(model_home: Path) -> Path:
    run_cli("init", check=True)
    with Store.open(model_home / "criticloop.db", create=False) as store:
        add_constructed_pairs(store)
    return model_home


def _adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dpo_trained(tmp_path_factory, models_cache):
    """One real DPO run on the bundled model (constructed pairs, two steps), shared by the test
    of what training leaves behind and the gate's test: (home, summary, base sha before)."""
    home = tmp_path_factory.mktemp("dpo-home")
    (home / "models").symlink_to(models_cache, target_is_directory=True)
    base = home / "models" / "smollm2-135m-instruct" / "model.safetensors"
    before = _sha(base)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CRITICLOOP_HOME", str(home))
        run_cli("init", check=True)
        with Store.open(home / "criticloop.db", create=False) as store:
            add_constructed_pairs(store)
        result = run_cli("train", *TINY_DPO, "--no-gate", "--json", check=True)
    return home, json.loads(result.stdout), before


@pytest.mark.slow
def test_dpo_trains_a_lora_adapter_and_the_base_stays_as_it_was(dpo_trained, monkeypatch):
    home, summary, before = dpo_trained
    assert summary["status"] == "done" and summary["metrics"]["steps"] == 2
    with Store.open(home / "criticloop.db", create=False) as store:
        job = store.get_job(summary["job_id"])
        adapter = store.get_adapter(summary["adapter"])
    losses = [entry["loss"] for entry in job["metrics"]["log"] if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert job["status"] == "done" and job["adapter_version"] == summary["adapter"]
    assert adapter["status"] == "candidate" and adapter["data_hash"] == job["data_hash"]
    # What it cost: wall time, the tokens of its pairs times the epochs trained, device-hours.
    cost = summary["metrics"]["cost"]
    assert cost["wall_seconds"] > 0 and cost["tokens"] > 0 and cost["devices"] == 1
    assert cost["device_hours"] == pytest.approx(cost["wall_seconds"] / 3600, abs=1e-6)
    assert cost["cost"] is None  # no price set
    assert (job["wall_seconds"], job["tokens"]) == (cost["wall_seconds"], cost["tokens"])
    tensors = _adapter_tensors(Path(adapter["path"]))
    assert tensors and all("lora_" in name for name in tensors)
    # LoRA B starts at zero: any non-zero B means the adapter learned.
    assert any(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    assert _sha(home / "models" / "smollm2-135m-instruct" / "model.safetensors") == before
    monkeypatch.setenv("CRITICLOOP_HOME", str(home))
    listed = run_cli("adapters", "list", check=True).stdout
    assert summary["adapter"] in listed and "candidate" in listed


@pytest.mark.slow
def test_gate_report_decides_and_registry_commands_follow(dpo_trained, model_home, monkeypatch):
    from conftest import copy_database

    trained_home, summary, _ = dpo_trained
    copy_database(trained_home / "criticloop.db", model_home / "criticloop.db")
    version = summary["adapter"]
    monkeypatch.setenv("CRITICLOOP_GATE__PROMPTS", "3")
    monkeypatch.setenv("CRITICLOOP_GATE__SAMPLES_PER_PROMPT", "2")
    monkeypatch.setenv("CRITICLOOP_GATE__MAX_NEW_TOKENS", "16")
    report = json.loads(run_cli("adapters", "evaluate", version, "--json", check=True).stdout)
    assert report["prompts"] == 3 and report["comparisons"] == 6
    assert report["wins"] + report["losses"] + report["ties"] == 6
    better, worse = report["prompts_better"], report["prompts_worse"]
    assert better + worse + report["prompts_even"] == 3
    assert report["p_value"] == pytest.approx(sign_test(better, worse), abs=1e-6)
    significant = report["p_value"] < 0.05 and report["ci_low"] > 0.5
    assert report["decision"] == ("promote" if significant else "keep")
    assert {o["outcome"] for o in report["outcomes"]} <= {"win", "loss", "tie"}
    # The guards' measurements: both sides' lengths and hard rules, and the adapter's KL from
    # the base model on its own answers (a LoRA update after a few steps: small, finite).
    for side in ("candidate_stats", "baseline_stats"):
        assert report[side]["answers"] == 6 and report[side]["words"] > 0
        assert 0 <= report[side]["violations"] <= 6
    assert all(math.isfinite(o["kl"]) for o in report["outcomes"])
    assert report["kl"] == pytest.approx(sum(o["kl"] for o in report["outcomes"]) / 6, abs=1e-3)
    assert report["independent"] is None and isinstance(report["flags"], list)
    with Store.open(model_home / "criticloop.db", create=False) as store:
        stored = store.gate_reports(version)[0]
        status = store.get_adapter(version)["status"]
    assert stored["decision"] == report["decision"] and stored["baseline_version"] is None
    assert status == ("promoted" if significant else "rejected")

    run_cli("adapters", "promote", version, check=True)
    assert f"{version} " in run_cli("adapters", "list", check=True).stdout
    with Store.open(model_home / "criticloop.db", create=False) as store:
        assert (
            store.promoted_adapter(store.get_adapter(version)["base_model"])["version"] == version
        )
    out = run_cli("adapters", "rollback", check=True).stdout
    assert f"retired {version}; in service now: the base model" in out
    assert run_cli("adapters", "rollback").returncode == 2


@pytest.mark.slow
def test_a_killed_job_is_failed_with_its_reason_and_the_next_one_resumes_it(
    pairs_home, tiny_policy, monkeypatch
):
    # Resuming is the same for any model: a tiny one keeps the two runs' steps cheap.
    monkeypatch.setenv("CRITICLOOP_POLICY__MODEL", str(tiny_policy))
    args = ["train", "--launcher", "subprocess", "--max-steps", "2", "--batch-size", "1"]
    args += ["--save-steps", "1", "--no-gate", "--json"]
    failed = kill_after_first_checkpoint(*args, home=pairs_home)
    assert failed["status"] == "failed" and "killed by SIGKILL" in failed["reason"]
    jobs = json.loads(run_cli("jobs", "--json", check=True).stdout)
    assert len(jobs) == 1 and jobs[0]["status"] == "failed" and jobs[0]["adapter_version"] is None
    assert json.loads(run_cli("adapters", "list", "--json", check=True).stdout) == []

    resumed = json.loads(run_cli(*args, check=True, timeout=600).stdout)
    assert resumed["status"] == "done" and resumed["resumed"] is True
    assert resumed["job_id"] == jobs[0]["id"]
    assert resumed["metrics"]["resumed_from"].startswith("checkpoint-")
    assert resumed["metrics"]["steps"] == 2
    jobs = json.loads(run_cli("jobs", "--json", check=True).stdout)
    assert len(jobs) == 1 and jobs[0]["status"] == "done"
    assert [e["step"] for e in jobs[0]["metrics"]["log"] if "loss" in e] == [1, 2]


@pytest.mark.slow
def test_the_accelerate_launcher_runs_the_worker_under_accelerate_launch(
    pairs_home, tmp_path, tiny_policy
):
    # One CPU process: the same launch path a DeepSpeed or FSDP config file takes on GPUs, with
    # a tiny policy (the launch is what is tested).
    config = tmp_path / "accelerate.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\n"
        "num_machines: 1\nmachine_rank: 0\nuse_cpu: true\nmixed_precision: 'no'\n"
    )
    env = {
        **os.environ,
        "CRITICLOOP_TRAINING__ACCELERATE_CONFIG": str(config),
        "CRITICLOOP_POLICY__MODEL": str(tiny_policy),
    }
    args = ("train", "--launcher", "accelerate", "--max-steps", "1", "--batch-size", "1")
    summary = json.loads(
        run_cli(*args, "--no-gate", "--json", check=True, timeout=600, env=env).stdout
    )
    assert summary["status"] == "done" and summary["metrics"]["steps"] == 1
    jobs = json.loads(run_cli("jobs", "--json", check=True).stdout)
    assert jobs[0]["launcher"] == "accelerate" and jobs[0]["adapter_version"] == summary["adapter"]
    log = Path(jobs[0]["log_path"]).read_text()
    assert "Traceback" not in log


RL_ENV = {
    "CRITICLOOP_TRAINING__RL_STEPS": "2",
    "CRITICLOOP_TRAINING__RL_SAMPLES_PER_PROMPT": "2",
    "CRITICLOOP_TRAINING__RL_MAX_NEW_TOKENS": "12",
    "CRITICLOOP_TRAINING__BATCH_SIZE": "1",
}


@pytest.fixture(scope="module")
def tiny_rm_profile(tmp_path_factory, models_cache) -> Path:
    """A profile naming a tiny reward model (random weights, SmolLM2's chat template) 'tiny'."""
    from criticloop.reward import DEFAULT_PROFILES

    folder = tmp_path_factory.mktemp("tiny-rm")
    model = tiny_llama(models_cache, folder / "rm", "LlamaForSequenceClassification", num_labels=1)
    profile = folder / "profile.toml"
    profile.write_text(
        DEFAULT_PROFILES.read_text() + f'\n[reward_models.tiny]\nmodel = "{model}"\n'
    )
    return profile


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "reward"),
    [("ppo", "critics"), ("grpo", "mix:tiny"), ("rloo", "critics"), ("ppo", "rm:tiny")],
)
def test_rl_methods_learn_from_the_critics(
    pairs_home, monkeypatch, tiny_rm_profile, tiny_policy, method, reward
):
    for name, value in RL_ENV.items():
        monkeypatch.setenv(name, value)
    if (method, reward) != ("ppo", "critics"):  # that one trains the bundled model; the rest
        monkeypatch.setenv("CRITICLOOP_POLICY__MODEL", str(tiny_policy))  # check the wiring
    monkeypatch.setenv("CRITICLOOP_PROFILES", str(tiny_rm_profile))
    args = ("train", "--method", method, "--reward", reward, "--no-gate", "--json")
    summary = json.loads(run_cli(*args, check=True, timeout=600).stdout)
    assert summary["status"] == "done" and summary["metrics"]["steps"] == 2
    assert summary["metrics"]["reward"] == reward
    if reward != "critics":
        assert summary["metrics"]["reward_model"].startswith("tiny-")
        weight = 1.0 if reward.startswith("rm:") else 0.5
        assert summary["metrics"]["reward_model_weight"] == weight
    with Store.open(pairs_home / "criticloop.db", create=False) as store:
        log = store.get_job(summary["job_id"])["metrics"]["log"]
        path = Path(store.get_adapter(summary["adapter"])["path"])
    assert len(log) == 2
    if method == "ppo":
        for key in ("reward_mean", "kl", "clip_fraction", "value_loss", "entropy", "policy_loss"):
            assert all(math.isfinite(entry[key]) for entry in log), key
        assert (path / "value_head.safetensors").exists()
    else:
        # Each critic is its own reward function, logged by TRL; vetoes are one more.
        assert all("rewards/helpfulness/mean" in entry for entry in log)
        assert all("rewards/veto/mean" in entry for entry in log)
        weights = summary["metrics"]["reward_weights"]
        assert set(weights) >= {"helpfulness", "veto"}
        if reward.startswith("mix"):  # the model is one more function, half the weight
            assert all("rewards/reward_model/mean" in entry for entry in log)
            assert weights["reward_model"] == 0.5
            assert sum(w for k, w in weights.items() if k not in ("veto", "reward_model")) == (
                pytest.approx(0.5)
            )
    tensors = _adapter_tensors(path)
    assert any(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)


@pytest.mark.slow
def test_nightly_run_trains_when_enough_new_pairs_exist(pairs_home, monkeypatch):
    run = ("graph", "run", "-p", "general-001", "-k", "2", "--max-new-tokens", "8")
    monkeypatch.setenv("CRITICLOOP_TRAINING__MIN_NEW_PAIRS", "1000")
    out = run_cli(*run, "--train", "auto", check=True).stdout
    assert "training skipped:" in out and "fewer than 1000" in out

    monkeypatch.setenv("CRITICLOOP_TRAINING__MAX_STEPS", "1")
    monkeypatch.setenv("CRITICLOOP_TRAINING__BATCH_SIZE", "2")
    monkeypatch.setenv("CRITICLOOP_GATE__PROMPTS", "2")
    monkeypatch.setenv("CRITICLOOP_GATE__SAMPLES_PER_PROMPT", "1")
    monkeypatch.setenv("CRITICLOOP_GATE__MAX_NEW_TOKENS", "8")
    monkeypatch.setenv("CRITICLOOP_TRAINING__MIN_NEW_PAIRS", "5")
    summary = json.loads(
        run_cli(*run[:3], "general-002", *run[4:], "--train", "auto", "--json", check=True).stdout
    )
    training = summary["training"]
    assert training["status"] == "done" and training["new_pairs"] >= 5
    assert training["gate"]["decision"] in ("promote", "keep")
    with Store.open(pairs_home / "criticloop.db", create=False) as store:
        stored = store.get_run(summary["run_id"])["summary"]
        job = store.get_job(training["job_id"])
    assert stored["training"]["adapter"] == training["adapter"]
    assert job["run_id"] == summary["run_id"]
