"""Training on several GPUs, checked without one: the launch commands built for 1, 2 and 8 GPUs
(parsed by accelerate's own launcher), the bundled accelerate presets, PPO's refusal to run
across processes, and GRPO/RLOO's vLLM server settings."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from criticloop.errors import InputError
from criticloop.settings import Settings, TrainingSettings
from criticloop.training._jobs import (
    ACCELERATE_PRESETS,
    check_launch,
    check_vllm_server,
    resolve_launcher,
    run_job,
    worker_command,
)
from criticloop.training._ppo import ONE_GPU, check_one_process

ROOT = Path(__file__).parent.parent
WORKER = ["-m", "criticloop.training.worker"]


def _accelerate_parses(command: list[str]):
    """What ``accelerate launch`` makes of ``command``'s arguments (no process is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    return args


# ---- launch commands ----------------------------------------------------------------------------


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_one_worker_process_per_gpu(tmp_path, gpus):
    launcher = resolve_launcher("auto", gpus, "dpo")
    command = worker_command(launcher, tmp_path, None, gpus)
    assert command[-3:] == [*WORKER, str(tmp_path)]
    if gpus == 1:
        assert launcher == "subprocess" and command == [sys.executable, *WORKER, str(tmp_path)]
        return
    assert launcher == "accelerate"
    preset = str(ACCELERATE_PRESETS["ddp"])
    assert command[3:7] == ["--config_file", preset, "--num_processes", str(gpus)]
    args = _accelerate_parses(command)
    assert (args.num_processes, args.multi_gpu, args.use_deepspeed) == (gpus, True, False)
    assert (args.module, args.training_script, args.training_script_args) == (
        True,
        "criticloop.training.worker",
        [str(tmp_path)],
    )


def test_zero3_preset_launches_deepspeed_stage_3(tmp_path):
    command = worker_command("accelerate", tmp_path, "zero3", 8)
    assert command[3:7] == [
        "--config_file",
        str(ACCELERATE_PRESETS["zero3"]),
        "--num_processes",
        "8",
    ]
    args = _accelerate_parses(command)
    assert (args.num_processes, args.use_deepspeed, args.zero_stage) == (8, True, 3)


def test_a_config_that_counts_its_processes_keeps_its_count(tmp_path):
    config = tmp_path / "two-nodes.yaml"
    config.write_text("distributed_type: MULTI_GPU\nnum_machines: 2\nnum_processes: 16\n")
    command = worker_command("accelerate", tmp_path, config, 8)
    assert "--num_processes" not in command and command[3:5] == ["--config_file", str(config)]
    with pytest.raises(InputError, match="does not exist .*preset: ddp, zero3"):
        worker_command("accelerate", tmp_path, "zero2", 8)


# ---- the presets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("zero3", "DEEPSPEED")])
def test_presets_are_accelerate_configs(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCELERATE_PRESETS[name]
    data = yaml.safe_load(path.read_text())
    assert data["compute_environment"] == "LOCAL_MACHINE" and data["distributed_type"] == kind
    assert (data["num_machines"], data["machine_rank"], data["mixed_precision"]) == (1, 0, "bf16")
    assert "num_processes" not in data  # the launch command says how many GPUs
    if kind == "DEEPSPEED":
        assert data["deepspeed_config"]["zero_stage"] == 3
    assert load_config_from_file(str(path)).distributed_type == kind
    # Shipped in the package: pyproject's package-data covers them.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["criticloop.training"]
    assert any(path in (ROOT / "training").glob(p) for p in patterns)
    extras = pyproject["project"]["optional-dependencies"]
    assert any(req.startswith("deepspeed") for req in extras["deepspeed"])


# ---- PPO: one process ------------------------------------------------------------------------------


def test_ppo_stays_on_one_gpu_and_refuses_accelerate():
    assert [resolve_launcher("auto", n, "ppo") for n in (0, 1, 2, 8)] == [
        "inprocess",
        "subprocess",
        "subprocess",
        "subprocess",
    ]
    with pytest.raises(InputError) as refused:
        check_launch(TrainingSettings(method="ppo", launcher="accelerate"), "accelerate")
    assert ONE_GPU in str(refused.value) and "\n" not in str(refused.value)
    check_launch(TrainingSettings(method="ppo"), "subprocess")
    check_launch(TrainingSettings(method="grpo"), "accelerate")  # TRL's trainers are rank-aware


def test_cli_refuses_ppo_under_accelerate_before_the_job_starts(store):
    result = run_cli("train", "--method", "ppo", "--launcher", "accelerate")
    assert result.returncode == 2
    # Before it, only the warning that this machine has no GPU at all.
    *_, error = result.stderr.strip().splitlines()
    assert error.startswith("criticloop: error: PPO runs on one GPU: use --launcher subprocess")
    assert store.list_jobs() == []


@pytest.mark.skipif(find_spec("deepspeed") is not None, reason="DeepSpeed is installed here")
def test_zero3_without_deepspeed_is_refused_before_the_job_starts():
    with pytest.raises(InputError, match=r"pip install 'criticloop\[deepspeed\]'"):
        check_launch(TrainingSettings(accelerate_config="zero3"), "accelerate")


def test_ppo_worker_among_several_processes_fails_in_one_line(settings, tmp_path, monkeypatch):
    assert check_one_process({}) is None and check_one_process({"WORLD_SIZE": "1"}) is None
    with pytest.raises(InputError, match="one of 2 processes"):
        check_one_process({"WORLD_SIZE": "2"})
    job = tmp_path / "job"
    job.mkdir()
    _config(settings, job, method="ppo", launcher="accelerate").write(job / "config.json")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # another rank writes nothing, nor clears rank 0's files
    (job / "failure.json").write_text('{"reason": "rank 0 wrote this"}')
    with pytest.raises(InputError):
        run_job(job)
    assert json.loads((job / "failure.json").read_text())["reason"] == "rank 0 wrote this"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(InputError):
        run_job(job)
    reason = json.loads((job / "failure.json").read_text())["reason"]
    assert ONE_GPU in reason and "one of 2 processes" in reason and "\n" not in reason
    assert sorted(p.name for p in job.iterdir()) == ["config.json", "failure.json"]


def test_ppo_worker_started_by_torchrun_on_two_processes_refuses(settings, tmp_path):
    # torch.distributed.run is what accelerate launch starts the workers with on several GPUs;
    # here on CPU, two real processes with the WORLD_SIZE and RANK it gives them.
    job = tmp_path / "job"
    job.mkdir()
    _config(settings, job, method="ppo", launcher="accelerate").write(job / "config.json")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *WORKER]
    done = subprocess.run([*command, str(job)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    reason = json.loads((job / "failure.json").read_text())["reason"]
    assert reason == f"InputError: {ONE_GPU} (this worker is one of 2 processes)"
    assert sorted(p.name for p in job.iterdir()) == ["config.json", "failure.json"]


# ---- GRPO/RLOO with a vLLM server ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_vllm_server_settings_reach_trls_config(settings, tmp_path, method):
    from criticloop.training._online import online_args
    from trl import GRPOConfig, RLOOConfig

    args_class = GRPOConfig if method == "grpo" else RLOOConfig
    plain = online_args(_config(settings, tmp_path, method=method), args_class, [1.0])
    assert plain.use_vllm is False
    config = _config(
        settings,
        tmp_path,
        method=method,
        use_vllm=True,
        vllm_server_base_url="http://gpu-host:8001",
        vllm_server_timeout=30.0,
    )
    args = online_args(config, args_class, [1.0])
    assert (args.use_vllm, args.vllm_mode) == (True, "server")
    assert (args.vllm_server_base_url, args.vllm_server_timeout) == ("http://gpu-host:8001", 30.0)
    moved = _config(settings, tmp_path, method=method, use_vllm=True)
    assert moved.key() == config.key()  # where the server is does not change what is learned
    assert _config(settings, tmp_path, method=method).key() != config.key()


def test_settings_read_the_vllm_variables(monkeypatch):
    monkeypatch.setenv("CRITICLOOP_TRAINING__USE_VLLM", "true")
    monkeypatch.setenv("CRITICLOOP_TRAINING__VLLM_SERVER_BASE_URL", "http://10.0.0.7:8000")
    training = Settings.load(env_file=None).training
    assert training.use_vllm and training.vllm_server_base_url == "http://10.0.0.7:8000"


def test_no_vllm_server_is_refused_in_one_line_not_waited_for():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(InputError) as refused:
        check_launch(
            TrainingSettings(method="grpo", use_vllm=True, vllm_server_base_url=url), "inprocess"
        )
    message = str(refused.value)
    assert message.startswith(f"use_vllm: no vLLM server answers at {url}") and "\n" not in message
    assert "trl vllm-serve" in message
    check_launch(
        TrainingSettings(method="dpo", use_vllm=True, vllm_server_base_url=url), "inprocess"
    )


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vLLM is installed here")
def test_a_server_that_answers_still_needs_vllm_installed():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(InputError, match=r"pip install 'trl\[vllm\]'"):
            check_vllm_server(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()


def _config(settings: Settings, job_dir: Path, **training):
    from criticloop.agents import ModelRef
    from criticloop.training import TrainConfig

    ref = ModelRef(name="base", source="/models/base")
    changes = settings.training.model_copy(update=training)
    launcher = training.get("launcher", "subprocess")
    return TrainConfig.build(settings, changes, ref, "cpu", launcher).for_job("train-x", job_dir)


class _Loaded(Exception):
    """Stops a job at its model load: what came before is all the test needs."""


@pytest.mark.parametrize("method", ["dpo", "sft", "kto"])
def test_the_trainer_arguments_come_before_the_model_loads(settings, tmp_path, monkeypatch, method):
    """Under DeepSpeed ZeRO-3 from_pretrained shards the weights only when the trainer's
    arguments (which carry the DeepSpeed config) exist already; else every rank loads them whole."""
    from criticloop.training import _dpo, _kto, _sft

    order: list[str] = []
    real_args = _dpo.trainer_args

    def trainer_args(*args, **kwargs):
        order.append("arguments")
        return real_args(*args, **kwargs)

    def load_base(config, **_):
        order.append("model")
        raise _Loaded

    module = {"dpo": _dpo, "sft": _sft, "kto": _kto}[method]
    monkeypatch.setattr(module, "trainer_args", trainer_args)
    monkeypatch.setattr(module, "load_base", load_base)
    config = _config(settings, tmp_path, method=method)
    row = {"prompt": [{"role": "user", "content": "Hi?"}], "completion": [
        {"role": "assistant", "content": "Hello."}]}  # fmt: skip
    with pytest.raises(_Loaded):
        if method == "dpo":
            pair = {
                "prompt": row["prompt"],
                "chosen": row["completion"],
                "rejected": row["completion"],
            }
            _dpo.run_dpo(config, [pair], [1.0], lambda entry: None)
        elif method == "sft":
            _sft.run_sft(config, [row], [1.0], lambda entry: None)
        else:
            _kto.run_kto(config, [{**row, "label": True}], lambda entry: None)
    assert order == ["arguments", "model"]
