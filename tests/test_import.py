"""`criticloop import`: the documented schema, and bad input reported as file:line, all or nothing."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from criticloop.errors import InputError
from criticloop.store import Store, read_records

BRAND = {"kind": "brand", "id": "acme", "name": "Acme", "voice": {"tone": "dry"}}
CAMPAIGN = {
    "kind": "campaign",
    "id": "acme-anvils",
    "brand": "acme",
    "name": "Anvils",
    "product": "Acme Anvil",
    "ad_copy": "Heavy. Reliable. Acme.",
}


def _jsonl(path, *objects) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return str(path)


def _counts(settings):
    with Store.open(settings.db_path) as store:
        return store.counts()


def test_import_jsonl_then_again_changes_nothing(settings, tmp_path):
    path = _jsonl(
        tmp_path / "mine.jsonl",
        BRAND,
        CAMPAIGN,
        {"task_type": "ad_insertion", "campaign": "acme-anvils", "prompt": "How do I fix a cart?"},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "that was curt"},
            ],
            "task_type": "feedback_conversation",
        },
    )
    first = run_cli("import", path, "--json", check=True)
    assert json.loads(first.stdout)["inserted"] == {"brand": 1, "campaign": 1, "prompt": 2}
    second = run_cli("import", path, "--json", check=True)
    assert json.loads(second.stdout)["unchanged"] == {"brand": 1, "campaign": 1, "prompt": 2}
    assert _counts(settings)["prompts"] == 2


def test_yaml_sections_and_line_numbers(tmp_path):
    path = tmp_path / "brands.yaml"
    path.write_text(
        "brands:\n"
        "  - id: acme\n"
        "    name: Acme\n"
        "prompts:\n"
        "  - prompt: Plan my week\n"
        "  - prompt: Write a haiku\n"
        "    task_type: poetry\n"
    )
    with pytest.raises(InputError) as error:
        read_records(path)
    assert str(error.value).startswith(f"{path}:6: prompt: task_type:")
    path.write_text(path.read_text().replace("poetry", "creative"))
    kinds = [r.kind for r, _ in read_records(path)]
    assert kinds == ["brand", "prompt", "prompt"]


def test_malformed_line_names_file_and_line_and_writes_nothing(settings, tmp_path):
    run_cli("init", "--no-demo", check=True)
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(BRAND)
        + "\n"
        + json.dumps({"prompt": "fine"})
        + "\n"
        + '{"prompt": "broken", }\n'
    )
    result = run_cli("import", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"criticloop: error: {path}:3: invalid JSON: Expecting property name enclosed in double quotes (column 22)"
    ]
    assert "Traceback" not in result.stderr
    assert _counts(settings)["brands"] == 0 and _counts(settings)["prompts"] == 0


def test_unknown_brand_is_reported_at_its_line(settings, tmp_path):
    run_cli("init", "--no-demo", check=True)
    path = _jsonl(
        tmp_path / "p.jsonl",
        {"prompt": "ok"},
        {"task_type": "creative", "brand": "ghost", "prompt": "Write a tagline"},
    )
    result = run_cli("import", path)
    assert result.returncode == 2
    assert f"{path}:2: unknown brand 'ghost'" in result.stderr
    assert _counts(settings)["prompts"] == 0  # the good line before it was rolled back


def test_campaign_of_another_brand(settings, tmp_path):
    other = {**BRAND, "id": "globex", "name": "Globex"}
    path = _jsonl(
        tmp_path / "p.jsonl",
        BRAND,
        other,
        CAMPAIGN,
        {"task_type": "ad_insertion", "brand": "globex", "campaign": "acme-anvils", "prompt": "q"},
    )
    result = run_cli("import", path)
    assert result.returncode == 2
    assert (
        f"{path}:4: campaign 'acme-anvils' belongs to brand 'acme', not 'globex'" in result.stderr
    )
    assert _counts(settings)["brands"] == 0


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "hi", "colour": "red"}, "prompt: colour: Extra inputs are not permitted"),
        ({"kind": "persona"}, "unknown kind 'persona'"),
        ({"task_type": "persona_chat", "prompt": "hi"}, "a persona_chat prompt needs a 'persona'"),
        (
            {"task_type": "ad_insertion", "prompt": "hi"},
            "an ad_insertion prompt needs a 'campaign'",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "'messages' must end with a user turn",
        ),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "not both"),
        (
            {"kind": "brand", "id": "has space", "name": "x"},
            "brand: id: String should match pattern",
        ),
        (["not", "an", "object"], "each line must be a JSON object"),
    ],
)
def test_invalid_records(tmp_path, record, message):
    path = _jsonl(tmp_path / "x.jsonl", {"prompt": "first line is fine"}, record)
    with pytest.raises(InputError) as error:
        read_records(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_same_id_twice_with_different_content(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", {"id": "q", "prompt": "one"}, {"id": "q", "prompt": "two"})
    with pytest.raises(
        InputError, match=r"x.jsonl:2: prompt 'q' is defined twice .*first at line 1"
    ):
        read_records(path)


def test_missing_file_and_unknown_type(tmp_path):
    result = run_cli("import", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "nope.jsonl: no such file" in result.stderr
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    result = run_cli("import", str(other))
    assert result.returncode == 2 and "use .jsonl or .yaml" in result.stderr


def test_invalid_utf8_names_the_line(settings, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError) as error:
        read_records(path)
    assert str(error.value) == f"{path}:2: not valid UTF-8 (byte 0xe9)"
