"""Hermetic tests: every test gets its own data home and ignores the developer's .env.

The bundled policy is converted from GGUF once per session into ``models_cache`` and linked
into each test's data home, so tests that load it pay the conversion only once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from criticloop.settings import Settings
from criticloop.store import DEMO_FILES, Store, read_records

REPO = Path(__file__).resolve().parent.parent
# Before anything imports huggingface_hub (which reads these once): tests never touch a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
_FOREIGN = ("LANGSMITH_", "LANGCHAIN_", "OPENAI_", "ANTHROPIC_")


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CRITICLOOP_") or name.startswith(_FOREIGN):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("CRITICLOOP_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # no .env here unless a test writes one
    return home


@pytest.fixture
def settings(hermetic: Path) -> Settings:
    return Settings.load(env_file=None)


@pytest.fixture
def store(settings: Settings):
    with Store.open(settings.db_path) as opened:
        yield opened


@pytest.fixture
def demo_store(store: Store) -> Store:
    store.import_records([r for path in DEMO_FILES for r in read_records(path)])
    return store


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding the converted bundled policy, shared by the whole session."""
    from criticloop.agents import ensure_bundled_policy

    cache = tmp_path_factory.mktemp("models")
    ensure_bundled_policy(cache)
    return cache


@pytest.fixture
def model_home(hermetic: Path, models_cache: Path) -> Path:
    """The test's data home with the converted policy already in place."""
    hermetic.mkdir(parents=True, exist_ok=True)
    (hermetic / "models").symlink_to(models_cache, target_is_directory=True)
    return hermetic


def run_cli(
    *args: str, check: bool = False, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run the installed ``criticloop`` console script in a real subprocess."""
    exe = Path(sys.executable).parent / "criticloop"
    result = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"criticloop {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def bundled_policy(models_cache: Path):
    """The bundled SmolLM2 policy, loaded once per session."""
    from criticloop.agents import Policy

    settings = Settings(_env_file=None, home=models_cache.parent / "policy-home")
    settings.models_dir.parent.mkdir(parents=True, exist_ok=True)
    if not settings.models_dir.exists():
        settings.models_dir.symlink_to(models_cache, target_is_directory=True)
    return Policy.load(settings)


@pytest.fixture(scope="session")
def bundled_embedder():
    from criticloop.agents import load_embedder

    return load_embedder(Settings(_env_file=None))


@pytest.fixture
def signals(bundled_embedder, bundled_policy):
    """Fresh shared-signal caches over the real bundled embedder and policy."""
    from criticloop.agents import Signals

    return Signals(bundled_embedder, bundled_policy)
