"""Training jobs: prepare the data, run the method where the hardware says, record everything.

    criticloop train --method dpo            # then the gate decides whether to promote

A job's directory (``$CRITICLOOP_HOME/training/<job id>``) holds its ``config.json``, its data
(``pairs.jsonl``, ``examples.jsonl`` for SFT and KTO, or ``prompts.json``, frozen when the job
starts), ``train.log``, per-step ``metrics.jsonl``, checkpoints, and finally the adapter,
which moves to ``$CRITICLOOP_HOME/adapters/<version>`` when it is registered.

Launchers: ``inprocess`` (CPU), ``subprocess`` (one GPU: the job runs as
``python -m criticloop.training.worker DIR`` and its crash cannot take the CLI with it), and
``accelerate`` (several GPUs: ``accelerate launch --num_processes N`` with a bundled preset,
``training/accelerate/ddp.yaml`` or ``zero3.yaml``, or the user's config file). PPO runs on one
GPU: ``auto`` gives it the subprocess and an explicit ``accelerate`` is refused before the job
starts. Only the launching process writes to the store, and only the worker's main process
(rank 0) writes the job's files. A job that fails (out of memory, a NaN
loss, killed) is recorded as failed with its reason and never registers an adapter; the next
``criticloop train`` with the same data and config resumes it from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CriticloopError, InputError
from ..settings import Settings, TrainingSettings
from ..store import Store
from ._config import RL_METHODS, TrainConfig
from ._data import load_preferences, prompts_hash, training_prompts
from ._dataset import DatasetLimits
from ._examples import EXAMPLE_METHODS, load_examples

log = logging.getLogger(__name__)


class TrainingFailed(CriticloopError):
    """The job ran and failed; the reason is recorded with the job."""

    exit_code = 1


@dataclass
class TrainResult:
    job_id: str
    method: str
    adapter_version: str
    adapter_path: str
    metrics: dict[str, Any]
    resumed: bool


# The accelerate configs shipped in the package, by the name that picks them.
ACCELERATE_PRESETS = {
    name: Path(__file__).parent / "accelerate" / f"{name}.yaml" for name in ("ddp", "zero3")
}


def resolve_launcher(requested: str, cuda_devices: int, method: str = "") -> str:
    """The launcher ``auto`` means on ``cuda_devices`` GPUs: in-process on CPU, a subprocess on
    one GPU, accelerate across several (PPO, which runs on one, keeps the subprocess)."""
    if requested != "auto":
        return requested
    if cuda_devices == 0:
        return "inprocess"
    if cuda_devices == 1 or method == "ppo":
        return "subprocess"
    return "accelerate"


def check_launch(training: TrainingSettings, launcher: str) -> None:
    """Refuse in one line, before the job starts and any model loads, what would fail in it:
    PPO across processes, a missing accelerate config or DeepSpeed, an unreachable vLLM server."""
    from ._ppo import ONE_GPU

    if launcher == "accelerate":
        if training.method == "ppo":
            raise InputError(f"{ONE_GPU} (not --launcher accelerate)")
        config = accelerate_config_file(training.accelerate_config)
        if _accelerate_setting(config, "distributed_type") == "DEEPSPEED":
            from importlib.util import find_spec

            if find_spec("deepspeed") is None:
                raise InputError(
                    f"accelerate config {config} uses DeepSpeed, which is not installed "
                    "(pip install 'criticloop[deepspeed]')"
                )
    if training.use_vllm and training.method in ("grpo", "rloo"):
        check_vllm_server(training.vllm_server_base_url)


def check_vllm_server(base_url: str, timeout: float = 5.0) -> None:
    """The vLLM server answers ``/health`` (TRL's own check) and TRL's client can be loaded."""
    import urllib.request
    from importlib.util import find_spec

    url = f"{base_url.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(
            f"use_vllm: no vLLM server answers at {base_url} ({reason}); start one with "
            "'trl vllm-serve --model MODEL', or set CRITICLOOP_TRAINING__USE_VLLM=false"
        ) from None
    if find_spec("vllm") is None:
        raise InputError(
            "use_vllm: TRL's vLLM client needs vllm installed beside the training "
            "(pip install 'trl[vllm]')"
        )


def accelerate_config_file(value: Path | str | None) -> Path:
    """The accelerate config to launch with: a preset by name (``ddp``, the default, or
    ``zero3``) or the user's file."""
    name = str(value) if value else "ddp"
    if name in ACCELERATE_PRESETS:
        return ACCELERATE_PRESETS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise InputError(
            f"accelerate config {value} does not exist (a file, or a preset: "
            f"{', '.join(ACCELERATE_PRESETS)})"
        )
    return path


def _accelerate_setting(config: Path, key: str) -> Any:
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))  # YAML or JSON, as accelerate
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"accelerate config {config} cannot be read: {exc}") from None
    return data.get(key) if isinstance(data, dict) else None


def train(
    settings: Settings,
    training: TrainingSettings | None = None,
    *,
    run_id: str | None = None,
) -> TrainResult:
    """Run one training job with ``training`` (default: the settings'); register its adapter."""
    import torch

    from ..agents import pick_device, policy_ref

    training = training or settings.training
    cuda = torch.cuda.device_count()
    launcher = resolve_launcher(training.launcher, cuda, training.method)
    if launcher != "inprocess" and cuda == 0 and training.launcher != "auto":
        log.warning("launcher %s with no CUDA device: the job will train on CPU", launcher)
    check_launch(training, launcher)
    device = pick_device(settings.policy.device)
    if training.method == "reward":
        return train_reward_model(settings, training, device, launcher, run_id=run_id)
    if training.method in RL_METHODS and training.reward != "critics":
        check_reward_model(settings, training.reward)
    if training.quantize == "4bit" and device != "cuda":
        raise InputError("--quantize 4bit (QLoRA) needs a CUDA GPU; the policy runs on CPU here")
    with Store.open(settings.db_path, create=False) as store:
        parent = store.promoted_adapter(policy_ref(settings, convert=False).name)
        if training.method == "dpo":
            data = load_preferences(
                store,
                training.source_weights,
                training.heldout_percent,
                limits=DatasetLimits.from_settings(training),
            )
            if not data.rows:
                raise InputError(
                    "no preference pairs to train on (criticloop graph run makes them; held-out "
                    "prompts and sources weighted 0 are left out)"
                )
            data_hash, examples = data.data_hash, len(data)
        elif training.method in EXAMPLE_METHODS:
            data = load_examples(store, training)  # SFT: good answers; KTO: rated answers
            data_hash, examples = data.data_hash, len(data)
        else:
            prompt_ids = training_prompts(store, training.heldout_percent)
            if not prompt_ids:
                raise InputError("no prompts to train on (criticloop import adds some)")
            data_hash, examples = prompts_hash(prompt_ids), len(prompt_ids)
        ref = policy_ref(settings)  # converts the bundled model (once): only with data to train
        config = TrainConfig.build(settings, training, ref, device, launcher)
        resumable = store.resumable_job(training.method, data_hash, config.key())
        if resumable and not has_checkpoint(Path(resumable["output_dir"])):
            resumable = None  # it failed before its first checkpoint: nothing to resume
        if resumable:
            job = store.claim_job(resumable["id"])
            job_id, job_dir = job["id"], Path(job["output_dir"])
            config = config.for_job(job_id, job_dir)
            log.info("resuming interrupted job %s from %s", job_id, job_dir)
        else:
            job_id = _new_job_id()
            job_dir = settings.home / "training" / job_id
            config = config.for_job(job_id, job_dir)
            job_dir.mkdir(parents=True, exist_ok=True)
            if training.method == "dpo":
                _write_jsonl(
                    job_dir / "pairs.jsonl",
                    ({**row, "weight": w} for row, w in zip(data.rows, data.weights, strict=True)),
                )
            elif training.method in EXAMPLE_METHODS:
                _write_jsonl(
                    job_dir / "examples.jsonl",
                    ({**row, "weight": w} for row, w in zip(data.rows, data.weights, strict=True)),
                )
            else:
                (job_dir / "prompts.json").write_text(json.dumps(prompt_ids))
            config.write(job_dir / "config.json")
            store.start_job(
                job_id=job_id,
                method=training.method,
                launcher=launcher,
                base_model=ref.name,
                parent_version=parent["version"] if parent else None,
                config=config.as_dict(),
                data_hash=data_hash,
                examples=examples,
                output_dir=str(job_dir),
                log_path=str(job_dir / "train.log"),
                run_id=run_id,
            )
        metrics = _launch_recorded(config, job_dir, store)
        if training.method in EXAMPLE_METHODS:
            metrics = {**metrics, "sources": dict(data.sources), "skipped": dict(data.skipped)}
        version = job_id.replace("train-", f"{training.method}-", 1)
        target = settings.adapters_dir / version
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(job_dir / "adapter"), target)
        store.record_adapter(
            version,
            base_model=ref.name,
            method=training.method,
            path=str(target),
            metrics=metrics,
            parent_version=parent["version"] if parent else None,
            run_id=run_id,
            data_hash=data_hash,
            config=config.as_dict(),
            job_id=job_id,
        )
        store.finish_job(job_id, "done", metrics=metrics, adapter_version=version)
        shutil.rmtree(job_dir / "checkpoints", ignore_errors=True)  # the adapter is what stays
    return TrainResult(job_id, training.method, version, str(target), metrics, bool(resumable))


def check_reward_model(settings: Settings, reward: str) -> None:
    """A reward model named for RL exists and is one: a one-line error now, not in the job."""
    from ..reward import Profiles, check_local, reward_model_spec
    from ._judge import parse_reward

    _, name = parse_reward(reward)
    if name:
        profiles = Profiles.load(settings.profiles)
        check_local(reward_model_spec(name, profiles, settings, dimension="reward_model"))


def reward_base(settings: Settings, base: str):
    """The model a reward model is trained from: the bundled MiniLM or SmolLM2, or a directory."""
    from ..agents import ModelRef, embedder_ref, policy_ref

    if base == "minilm":
        return embedder_ref(settings.model_copy(update={"embedder": settings.embedder.model_copy(
            update={"model": "bundled"})}))
    if base == "smollm2":
        return policy_ref(settings.model_copy(update={"policy": settings.policy.model_copy(
            update={"model": "bundled"})}))
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise InputError(
            f"--rm-base {base}: not minilm, smollm2 or a model directory (no config.json there)"
        )
    return ModelRef(name=base, source=str(path))


def train_reward_model(
    settings: Settings,
    training: TrainingSettings,
    device: str,
    launcher: str,
    *,
    run_id: str | None = None,
) -> TrainResult:
    """Train a reward model on people's decisions, measure it on held-out prompts, register it,
    and make it the active one of its dimension when it beats the active one there."""
    from ._reward import load_reward_pairs, resolve_tuning, write_reliability_diagram

    if training.quantize == "4bit":
        raise InputError("--quantize 4bit is for policy training; reward models train unquantized")
    with Store.open(settings.db_path, create=False) as store:
        data = load_reward_pairs(
            store,
            training.source_weights,
            training.rm_heldout_percent,
            synthetic=training.rm_synthetic,
            dimension=training.rm_dimension,
            limits=DatasetLimits.from_settings(training),
        )
        if not data.train:
            on = f" on {training.rm_dimension!r}" if training.rm_dimension else ""
            raise InputError(
                f"no decided pairs{on} to train a reward model on (criticloop labels import FILE, "
                "or decisions in criticloop review; --rm-synthetic adds the critics' pairs); "
                f"{len(data.heldout)} were held out for evaluation"
            )
        ref = reward_base(settings, training.rm_base)
        tuning = resolve_tuning(training.rm_tuning, ref.source)
        config = TrainConfig.build(settings, training, ref, device, launcher, rm_tuning=tuning)
        resumable = store.resumable_job("reward", data.data_hash, config.key())
        if resumable and not has_checkpoint(Path(resumable["output_dir"])):
            resumable = None
        if resumable:
            job = store.claim_job(resumable["id"])
            job_id, job_dir = job["id"], Path(job["output_dir"])
            config = config.for_job(job_id, job_dir)
        else:
            job_id = _new_job_id()
            job_dir = settings.home / "training" / job_id
            config = config.for_job(job_id, job_dir)
            job_dir.mkdir(parents=True, exist_ok=True)
            _write_jsonl(
                job_dir / "pairs.jsonl",
                ({**r, "weight": w} for r, w in zip(data.train, data.weights, strict=True)),
            )
            (job_dir / "heldout.json").write_text(json.dumps(data.heldout))
            config.write(job_dir / "config.json")
            store.start_job(
                job_id=job_id,
                method="reward",
                launcher=launcher,
                base_model=ref.name,
                parent_version=None,
                config=config.as_dict(),
                data_hash=data.data_hash,
                examples=len(data.train),
                output_dir=str(job_dir),
                log_path=str(job_dir / "train.log"),
                run_id=run_id,
            )
        metrics = _launch_recorded(config, job_dir, store)
        metrics = {**metrics, "sources": dict(data.sources), "skipped": dict(data.skipped)}
        version = job_id.replace("train-", "reward-", 1)
        target = settings.home / "reward_models" / version
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(job_dir / "adapter"), target)
        diagram = target / "reliability.png"
        if metrics["heldout"].get("n"):
            write_reliability_diagram(metrics["heldout"], f"{version} (held-out prompts)", diagram)
        row = {
            "dimension": training.rm_dimension,
            "base_model": ref.name,
            "base_path": ref.source,
            "tuning": tuning,
            "path": str(target),
            "center": metrics["center"],
        }
        activate, why = _beats_active(store, settings, row, data.heldout, metrics["heldout"])
        metrics["activation"] = why
        store.record_trained_reward_model(
            version,
            **row,
            metrics=metrics,
            config=config.as_dict(),
            data_hash=data.data_hash,
            pairs=len(data.train),
            job_id=job_id,
            activate=activate,
            diagram_path=str(diagram) if diagram.exists() else None,
        )
        store.finish_job(job_id, "done", metrics=metrics, adapter_version=None)
        shutil.rmtree(job_dir / "checkpoints", ignore_errors=True)
    return TrainResult(job_id, "reward", version, str(target), metrics, bool(resumable))


def _beats_active(store, settings, row, heldout, measured) -> tuple[bool, str]:
    """Activate the new model when none is active for its dimension, or when it is at least as
    accurate as the active one on the new held-out pairs (both measured on the same pairs)."""
    from ..reward import trained_spec
    from ._reward import evaluate_pairs

    current = store.active_trained_reward_model(row["dimension"])
    if current is None or current["dimension"] != row["dimension"]:
        return True, "activated: no reward model was active for its dimension"
    if not measured.get("n"):
        return False, f"kept {current['version']}: no held-out pairs to compare on"
    from ..reward import RewardScorer

    old = RewardScorer(trained_spec(current))
    theirs = evaluate_pairs(old.score_many, heldout)
    if measured["accuracy"] >= theirs["accuracy"]:
        return True, (
            f"activated: held-out accuracy {measured['accuracy']:.1%} vs "
            f"{theirs['accuracy']:.1%} for {current['version']}"
        )
    return False, (
        f"kept {current['version']}: its held-out accuracy {theirs['accuracy']:.1%} beats "
        f"{measured['accuracy']:.1%}"
    )


def has_checkpoint(job_dir: Path) -> bool:
    """A job can resume from a TRL checkpoint or a PPO state."""
    from ._dpo import last_checkpoint

    # PPO states are renamed into place whole, so any step folder is complete.
    return bool(last_checkpoint(str(job_dir))) or any(
        (job_dir / "adapter" / "ppo_state").glob("step-*")
    )


def _new_job_id() -> str:
    import uuid
    from datetime import UTC, datetime

    return f"train-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def _launch_recorded(config: TrainConfig, job_dir: Path, store: Store):
    """:func:`_launch`, recording the job as failed, with its reason, when it does not finish;
    either way the attempt's wall time, tokens and device-hours are recorded (``_costs``), and
    a finished job's metrics carry them as ``cost``."""
    from ._costs import record_cost

    started = time.monotonic()
    try:
        metrics = _launch(config, job_dir, store)
    except KeyboardInterrupt:
        steps = _read_steps(job_dir)
        record_cost(store, config, job_dir, time.monotonic() - started, steps, finished=False)
        store.finish_job(config.job_id, "failed", metrics=steps, reason="interrupted")
        raise
    except (TrainingFailed, InputError) as exc:
        steps = _read_steps(job_dir)
        record_cost(store, config, job_dir, time.monotonic() - started, steps, finished=False)
        store.finish_job(config.job_id, "failed", metrics=steps, reason=str(exc))
        raise
    cost = record_cost(store, config, job_dir, time.monotonic() - started, metrics)
    return {**metrics, "cost": cost}


def _launch(config: TrainConfig, job_dir: Path, store: Store):
    """Run the job with its launcher; return its final metrics or raise TrainingFailed."""
    if config.launcher == "inprocess":
        try:
            return run_job(job_dir, on_step=lambda steps: store.update_job(config.job_id, steps))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any training error fails the job with its reason
            raise TrainingFailed(failure_reason(exc)) from exc
    from ._costs import job_devices

    command = worker_command(
        config.launcher, job_dir, config.training.accelerate_config, job_devices(config.launcher)
    )
    with open(job_dir / "train.log", "ab") as logfile:
        process = subprocess.Popen(command, stdout=logfile, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                time.sleep(2)
                store.update_job(config.job_id, _read_steps(job_dir))
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            process.wait()
            raise
    result = job_dir / "result.json"
    if process.returncode == 0 and result.exists():
        return json.loads(result.read_text())
    failure = job_dir / "failure.json"
    if failure.exists():
        raise TrainingFailed(json.loads(failure.read_text())["reason"])
    if process.returncode < 0:
        name = signal.Signals(-process.returncode).name
        raise TrainingFailed(f"killed by {name} (see {job_dir / 'train.log'})")
    raise TrainingFailed(f"worker exited with {process.returncode} (see {job_dir / 'train.log'})")


def worker_command(
    launcher: str, job_dir: Path, accelerate_config: Path | str | None, processes: int = 1
) -> list[str]:
    """The worker's command line. Under accelerate, one process per GPU (``processes``) unless
    the config file sets ``num_processes`` itself (a config for several machines counts all)."""
    worker = ["-m", "criticloop.training.worker", str(job_dir)]
    if launcher == "subprocess":
        return [sys.executable, *worker]
    if launcher == "accelerate":
        config = accelerate_config_file(accelerate_config)
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        if _accelerate_setting(config, "num_processes") is None:
            launch += ["--num_processes", str(processes)]
        return [*launch, *worker]
    raise InputError(f"unknown launcher {launcher!r}")


def failure_reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text[:300]}"
    if isinstance(exc, FloatingPointError):
        return f"NaN loss: {text}"
    return f"{type(exc).__name__}: {text[:300]}"


def run_job(job_dir: Path, on_step=None) -> dict[str, Any]:
    """Train what ``job_dir/config.json`` describes; write ``adapter/`` and ``result.json``."""
    quiet_libraries()
    config = TrainConfig.read(job_dir / "config.json")
    steps_file = job_dir / "metrics.jsonl"
    main_process = int(os.environ.get("RANK", "0")) == 0

    def log_step(entry: dict[str, Any]) -> None:
        if main_process:
            with open(steps_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
            if on_step:
                on_step(_read_steps(job_dir))

    if main_process:
        for stale in ("result.json", "failure.json"):
            (job_dir / stale).unlink(missing_ok=True)
    try:
        if config.method == "ppo":
            from ._ppo import check_one_process

            check_one_process()  # before any model loads: PPO is not rank-aware
        if config.method == "dpo":
            from ._dpo import run_dpo

            rows = [json.loads(line) for line in open(job_dir / "pairs.jsonl", encoding="utf-8")]
            weights = [row.pop("weight") for row in rows]
            metrics = run_dpo(config, rows, weights, log_step)
        elif config.method in EXAMPLE_METHODS:
            rows = [json.loads(line) for line in open(job_dir / "examples.jsonl", encoding="utf-8")]
            weights = [row.pop("weight") for row in rows]
            if config.method == "sft":
                from ._sft import run_sft

                metrics = run_sft(config, rows, weights, log_step)
            else:
                from ._kto import run_kto

                metrics = run_kto(config, rows, log_step)
        elif config.method == "reward":
            from ._reward import run_reward

            rows = [json.loads(line) for line in open(job_dir / "pairs.jsonl", encoding="utf-8")]
            weights = [row.pop("weight") for row in rows]
            heldout = json.loads((job_dir / "heldout.json").read_text())
            metrics = run_reward(config, rows, weights, heldout, log_step)
        elif config.method in RL_METHODS:
            from ._online import run_online

            prompt_ids = json.loads((job_dir / "prompts.json").read_text())
            metrics = run_online(config, prompt_ids, log_step)
        else:
            raise InputError(f"unknown training method {config.method!r}")
    except BaseException as exc:
        if main_process and not isinstance(exc, KeyboardInterrupt):
            (job_dir / "failure.json").write_text(json.dumps({"reason": failure_reason(exc)}))
        raise
    metrics = {**metrics, "log": _read_steps(job_dir)["log"]}
    if main_process:
        (job_dir / "result.json").write_text(json.dumps(metrics, default=str))
    return metrics


def quiet_libraries() -> None:
    """Training libraries print deprecation advice, progress bars and, for bitsandbytes on a
    CPU, a note about an optional kernel package; the job's log keeps what matters."""
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*use_cache=True.*")
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()


def _read_steps(job_dir: Path) -> dict[str, Any]:
    path = job_dir / "metrics.jsonl"
    steps = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                steps.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
    # A resumed job logs its steps again from the checkpoint on: keep the latest of each.
    by_step = {entry.get("step"): entry for entry in steps}
    return {"log": [by_step[k] for k in sorted(by_step, key=lambda s: (s is None, s))]}


def _write_jsonl(path: Path, rows) -> None:
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
