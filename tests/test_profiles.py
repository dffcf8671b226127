"""Critic profiles: the bundled file, per task and brand resolution, validation errors."""

from __future__ import annotations

import pytest
from criticloop.errors import ConfigError
from criticloop.reward import DEFAULT_PROFILES, Profiles
from criticloop.vocab import TASK_TYPES


def test_bundled_profiles_cover_every_task_type():
    profiles = Profiles.load()
    assert profiles.source == DEFAULT_PROFILES
    for task in TASK_TYPES:
        profile = profiles.for_prompt(task)
        assert profile.critics, task
        assert "compliance" in profile.critics
    ads = profiles.for_prompt("ad_insertion")
    assert {"salience", "detectability", "brand_voice"} <= set(ads.critics)
    assert "salience" not in profiles.for_prompt("general").critics


def test_brand_overrides_merge_over_the_task():
    profiles = Profiles.load()
    plain = profiles.for_prompt("creative", "some-brand")
    health = profiles.for_prompt("creative", "meadowpath-wellness")
    assert health.weights["compliance"] > plain.weights["compliance"]
    assert health.weights["brand_voice"] == plain.weights["brand_voice"]


def test_version_changes_with_content(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(DEFAULT_PROFILES.read_text())
    first = Profiles.load(path).version
    path.write_text(DEFAULT_PROFILES.read_text().replace("pair_margin = 0.05", "pair_margin = 0.1"))
    second = Profiles.load(path)
    assert first != second.version and first.split("+")[0] == "default-1"
    assert second.for_prompt("general").routing.pair_margin == 0.1
    assert second.as_record()["content"]["routing"]["pair_margin"] == 0.1


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tasks.general.critics]\nwit = 1.0\n", "tasks.general.critics: unknown critic 'wit'"),
        ("[tasks.general.critics]\nhelpfulness = -1\n", "weight of 'helpfulness' must be >= 0"),
        ("[tasks.poetry.critics]\nhelpfulness = 1\n", "unknown task type 'poetry'"),
        (
            "[routing]\npair_margin = 2\n",
            "routing.pair_margin: Input should be less than or equal to 1",
        ),
        ("[routing]\nmargin = 0.1\n", "routing.margin: Extra inputs are not permitted"),
        (
            "[tasks.general.routing]\ngood_enough = 'high'\n",
            "good_enough: Input should be a valid number",
        ),
        ("[routing\npair_margin = 0.1\n", "invalid TOML"),
        (
            "[tasks.general.critics]\nhelpfulness = 0\ncoherence = 0.0\n",
            "tasks.general.critics: the weights sum to 0, so no critic would judge general",
        ),
        (
            "[tasks.general.critics]\nhelpfulness = 1\n[brands.acme.critics]\nhelpfulness = 0\n",
            "brands.acme.critics: with tasks.general the weights sum to 0",
        ),
    ],
)
def test_bad_profiles_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        Profiles.load(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read profiles"):
        Profiles.load(tmp_path / "nope.toml")


def test_graph_run_with_a_bad_profile_is_one_line_exit_2(tmp_path, monkeypatch):
    from conftest import run_cli

    run_cli("init", "--no-demo", check=True)
    path = tmp_path / "bad.toml"
    path.write_text("[tasks.general.critics]\nwit = 1.0\n")
    monkeypatch.setenv("CRITICLOOP_PROFILES", str(path))
    result = run_cli("graph", "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"criticloop: error: {path}: tasks.general")
