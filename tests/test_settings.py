"""Settings: environment, .env, nested sections, secrets, offline policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_cli
from criticloop.errors import ConfigError
from criticloop.settings import Settings


def test_defaults_are_offline_and_home_comes_from_env(hermetic: Path):
    settings = Settings.load(env_file=None)
    assert settings.home == hermetic
    assert settings.db_path == hermetic / "criticloop.db"
    assert settings.policy.model == "bundled" and settings.embedder.model == "bundled"
    assert settings.models_are_local()
    assert settings.langsmith_tracing is False and settings.openai_api_key is None


def test_nested_values_from_environment(monkeypatch):
    monkeypatch.setenv("CRITICLOOP_GENERATION__TEMPERATURE", "0.3")
    monkeypatch.setenv("CRITICLOOP_POLICY__DEVICE", "cpu")
    settings = Settings.load(env_file=None)
    assert settings.generation.temperature == 0.3
    assert settings.policy.device == "cpu"


def test_dotenv_is_read_and_environment_wins(monkeypatch, tmp_path):
    env_file = Path(".env")
    env_file.write_text(
        "CRITICLOOP_GENERATION__CANDIDATES=4\n"
        "CRITICLOOP_GENERATION__SEED=11\n"
        "OPENAI_API_KEY=sk-from-dotenv\n"
        "LANGSMITH_PROJECT=nightly\n"
        "SOMETHING_ELSE=ignored\n"
    )
    monkeypatch.setenv("CRITICLOOP_GENERATION__SEED", "12")
    settings = Settings.load()
    assert settings.generation.candidates == 4
    assert settings.generation.seed == 12
    assert settings.langsmith_project == "nightly"
    assert settings.openai_api_key.get_secret_value() == "sk-from-dotenv"


def test_secrets_never_show(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("LANGSMITH_API_KEY", "ls-very-secret")
    settings = Settings.load(env_file=None)
    for rendering in (repr(settings), str(settings), settings.model_dump_json()):
        assert "very-secret" not in rendering


def test_secrets_never_reach_the_database(monkeypatch, settings):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("LANGSMITH_API_KEY", "ls-very-secret")
    run_cli("init", check=True)
    run_cli("status", check=True)
    raw = b"".join(p.read_bytes() for p in settings.home.glob("criticloop.db*"))
    assert b"very-secret" not in raw


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "CRITICLOOP_GENERATION__TEMPERATURE",
            "hot",
            "CRITICLOOP_GENERATION__TEMPERATURE: Input should be a valid number",
        ),
        (
            "CRITICLOOP_GENERATION__CANDIDATES",
            "0",
            "CRITICLOOP_GENERATION__CANDIDATES: Input should be greater than or equal to 1",
        ),
        ("CRITICLOOP_POLICY__DEVICE", "tpu", "CRITICLOOP_POLICY__DEVICE: Input should be"),
        ("LANGSMITH_TRACING", "maybe", "LANGSMITH_TRACING: Input should be a valid boolean"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        Settings.load(env_file=None)
    assert str(error.value).startswith(message)


def test_bad_config_is_one_line_and_exit_2(monkeypatch):
    monkeypatch.setenv("CRITICLOOP_GENERATION__TOP_P", "2")
    result = run_cli("status")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "criticloop: error: CRITICLOOP_GENERATION__TOP_P: Input should be less than or equal to 1"
    )


def test_offline_flags_follow_the_models(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    Settings.load(env_file=None, policy={"model": "someorg/some-model"}).apply_offline_policy()
    assert "HF_HUB_OFFLINE" not in os.environ  # a hub id was asked for: leave the hub reachable
    Settings.load(env_file=None).apply_offline_policy()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_env_example_lists_every_setting():
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    names = {"CRITICLOOP_HOME", "CRITICLOOP_PROFILES", "CRITICLOOP_CONCURRENCY"}
    for section in ("policy", "embedder", "generation", "review", "training", "gate"):
        model = Settings.model_fields[section].annotation
        names |= {f"CRITICLOOP_{section.upper()}__{f.upper()}" for f in model.model_fields}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif alias is not None:
            names.add(alias.choices[0])
    missing = sorted(n for n in names if f"{n}=" not in example)
    assert missing == []
