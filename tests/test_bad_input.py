"""The bad-input catalogue: every command that reads user input, fed what users and hostile files
really send. Each case must end in one stderr line naming what is wrong (and where, for files),
exit 1 or 2, no traceback, and nothing written to the database.

The cases come from a probe of criticloop as a new user would meet it (empty, binary and BOM
files, wrong types, unknown fields, missing references, JSON and YAML nested 100,000 deep, a
5,000-digit integer, NaN, YAML aliases, a "billion laughs", FIFOs, binary env files, profiles
that judge nothing). A BOM is not an error: those cases must import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_cli, run_process
from criticloop.store import Store

DEEP = 100_000


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{f}" is the case's file
    content: bytes | str | None = None  # written to the file; None: no file is made
    file: str = "input.jsonl"
    code: int = 2
    says: str = ""  # part of the one stderr line
    env: dict[str, str] = field(default_factory=dict)  # "{f}" is the case's file
    special: Callable[[Path], None] | None = None  # makes the file instead (a FIFO, a directory)
    process: bool = False  # a real process with a timeout: the case could block forever


def _jsonl(*rows: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


PROMPT = {"prompt": "What is the capital of France?"}
PAIR = {"prompt": "Say hi.", "a": "Hi!", "b": "Go away.", "label": "a"}
LOGGED = {
    "messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
    "ratings": [{"turn": 1, "thumbs": "up"}],
}
NESTED_JSON = '{"prompt": "x", "metadata": {"a": ' + "[" * DEEP + "]" * DEEP + "}}"
NESTED_YAML = "- prompt: x\n  metadata:\n    a: " + "[" * DEEP + "]" * DEEP + "\n"
LAUGHS = (
    "- prompt: x\n  metadata:\n"
    '    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(
        f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n"
        for i in range(8)
    )
)
BINARY = bytes(range(256)) * 4

CASES = [
    # ---- criticloop import ----------------------------------------------------------------
    Case("import-empty", ("import", "{f}"), "", says="no records in this file"),
    Case("import-blank-lines", ("import", "{f}"), "\n\n  \n", says="no records in this file"),
    Case("import-binary", ("import", "{f}"), BINARY, says="input.jsonl:2: not valid UTF-8 (byte 0x80)"),
    Case("import-bom", ("import", "{f}"), "\ufeff" + _jsonl(PROMPT), code=0),
    Case("import-yaml-bom", ("import", "{f}"), "\ufeff- prompt: hi\n", file="in.yaml", code=0),
    Case("import-not-json", ("import", "{f}"), "prompt: x\n", says=":1: invalid JSON"),
    Case("import-array-line", ("import", "{f}"), "[1, 2]\n", says=":1: each line must be a JSON"),
    Case("import-wrong-type", ("import", "{f}"), _jsonl({"prompt": 5}), says=":1: prompt: prompt"),
    Case(
        "import-unknown-field",
        ("import", "{f}"),
        _jsonl({**PROMPT, "colour": "red"}),
        says="colour: Extra inputs are not permitted",
    ),
    Case(
        "import-unknown-kind", ("import", "{f}"), _jsonl({"kind": "robot"}), says="unknown kind"
    ),
    Case(
        "import-missing-brand",
        ("import", "{f}"),
        _jsonl({"task_type": "creative", "brand": "ghost", "prompt": "x"}),
        says=":1: unknown brand 'ghost'",
    ),
    Case(
        "import-no-conversation",
        ("import", "{f}"),
        _jsonl({"task_type": "general"}),
        says="a prompt needs 'prompt' text or 'messages'",
    ),
    Case("import-deep-json", ("import", "{f}"), NESTED_JSON + "\n", says=":1: nested more than"),
    Case(
        "import-huge-integer",
        ("import", "{f}"),
        '{"prompt": "x", "metadata": {"n": ' + "9" * 5000 + "}}\n",
        says=":1: an integer of 5000 digits (at most 18)",
    ),
    Case(
        "import-nan",
        ("import", "{f}"),
        '{"prompt": "x", "metadata": {"score": NaN}}\n',
        says=":1: NaN is not a number JSON allows",
    ),
    Case(
        "import-infinity",
        ("import", "{f}"),
        '{"prompt": "x", "metadata": {"score": 1e999}}\n',
        says=":1: the number 1e999 is too large to store",
    ),
    Case(
        "import-long-text",
        ("import", "{f}"),
        _jsonl({"prompt": "x" * 100_001}),
        says=":1: a text of 100001 characters (at most 100000",
    ),
    Case(
        "import-long-line",
        ("import", "{f}"),
        _jsonl(PROMPT, {"prompt": "y" * 3000}),
        env={"CRITICLOOP_LIMITS__LINE_BYTES": "2048"},
        says=":2: a line of 3014 bytes (at most 2048)",
    ),
    Case("import-missing-file", ("import", "{f}"), None, says="input.jsonl: no such file"),
    Case("import-csv", ("import", "{f}"), "a,b\n", file="in.csv", says="use .jsonl or .yaml"),
    Case(
        "import-fifo",
        ("import", "{f}"),
        special=_fifo,
        process=True,
        says="input.jsonl: not a regular file",
    ),
    Case(
        "import-directory", ("import", "{f}"), special=_directory, says="not a regular file"
    ),
    Case("import-yaml-invalid", ("import", "{f}"), "- prompt: [x\n", file="in.yaml", says="YAML"),
    Case(
        "import-yaml-scalar",
        ("import", "{f}"),
        "just text\n",
        file="in.yaml",
        says="a YAML file must hold a list of records",
    ),
    Case(
        "import-yaml-alias-record",
        ("import", "{f}"),
        "- &p\n  prompt: hi\n- *p\n",
        file="in.yaml",
        says="in.yaml:1: a record repeats another through a YAML alias",
    ),
    Case(
        "import-yaml-billion-laughs",
        ("import", "{f}"),
        LAUGHS,
        file="in.yaml",
        says="in.yaml:1: more than 1000000 values",
    ),
    Case("import-yaml-deep", ("import", "{f}"), NESTED_YAML, file="in.yaml", says="nested more"),
    Case(
        "import-yaml-nan",
        ("import", "{f}"),
        "- prompt: x\n  metadata: {score: .nan}\n",
        file="in.yaml",
        says="in.yaml:1: nan is not a number that can be stored",
    ),
    Case(
        "import-yaml-huge-integer",
        ("import", "{f}"),
        "- prompt: x\n  metadata: {n: " + "9" * 5000 + "}\n",
        file="in.yaml",
        says="in.yaml",
    ),
    # ---- criticloop labels import -------------------------------------------------------------
    Case("labels-empty", ("labels", "import", "{f}"), "", says="no labelled pairs in this file"),
    Case("labels-binary", ("labels", "import", "{f}"), BINARY, says=":2: not valid UTF-8"),
    Case("labels-bom", ("labels", "import", "{f}"), "\ufeff" + _jsonl(PAIR), code=0),
    Case("labels-not-json", ("labels", "import", "{f}"), "a,b\n", says=":1: invalid JSON"),
    Case("labels-not-objects", ("labels", "import", "{f}"), "[1]\n", says="(not an object)"),
    Case(
        "labels-unknown-shape",
        ("labels", "import", "{f}"),
        _jsonl({"question": "q", "answer": "x"}),
        says=":1: cannot tell the format",
    ),
    Case(
        "labels-no-usable-row",
        ("labels", "import", "{f}"),
        _jsonl({**PAIR, "b": PAIR["a"]}),
        says="no usable row: 1 skipped (identical_responses 1)",
    ),
    Case(
        "labels-deep",
        ("labels", "import", "{f}"),
        '{"prompt": "x", "a": "y", "b": "z", "label": "a", "id": ' + "[" * DEEP + "]" * DEEP + "}\n",
        says=":1: nested more than",
    ),
    Case(
        "labels-deep-array",
        ("labels", "import", "{f}"),
        "[" * DEEP + "]" * DEEP,
        file="in.json",
        says="nested more than",
    ),
    Case(
        "labels-huge-integer",
        ("labels", "import", "{f}"),
        '{"instruction": "x", "response1": "a", "response2": "b", "annotator1": '
        + "1" * 5000
        + "}\n",
        says=":1: an integer of 5000 digits",
    ),
    Case(
        "labels-nan",
        ("labels", "import", "{f}"),
        '{"instruction": "x", "response1": "a", "response2": "b", "annotator1": NaN}\n',
        says=":1: NaN is not a number JSON allows",
    ),
    Case(
        "labels-bad-gzip",
        ("labels", "import", "{f}"),
        b"\x1f\x8bnot gzip",
        file="in.jsonl.gz",
        says="not valid gzip",
    ),
    Case(
        "labels-fifo",
        ("labels", "import", "{f}"),
        special=_fifo,
        process=True,
        says="not a regular file",
    ),
    Case("labels-missing-file", ("labels", "import", "{f}"), None, says="no such file"),
    Case(
        "labels-bad-dataset",
        ("labels", "import", "{f}", "--dataset", "no spaces"),
        _jsonl(PAIR),
        says="cannot name a dataset",
    ),
    # ---- criticloop feedback import -----------------------------------------------------------
    Case("feedback-empty", ("feedback", "import", "{f}"), "", says="no conversations or feedback"),
    Case("feedback-binary", ("feedback", "import", "{f}"), BINARY, says=":2: not valid UTF-8"),
    Case("feedback-bom", ("feedback", "import", "{f}"), "\ufeff" + _jsonl(LOGGED), code=0),
    Case("feedback-not-json", ("feedback", "import", "{f}"), "a,b\n", says=":1: invalid JSON"),
    Case("feedback-array-line", ("feedback", "import", "{f}"), "[1]\n", says=":1: each line"),
    Case(
        "feedback-unknown-shape",
        ("feedback", "import", "{f}"),
        _jsonl({"question": "q", "answer": "x"}),
        says=":1: neither a conversation",
    ),
    Case(
        "feedback-bad-stars",
        ("feedback", "import", "{f}"),
        _jsonl(LOGGED, {**LOGGED, "ratings": [{"turn": 1, "stars": "5"}]}),
        says=":2: ratings[0].stars must be a whole number",
    ),
    Case(
        "feedback-unknown-brand",
        ("feedback", "import", "{f}"),
        _jsonl({**LOGGED, "brand": "ghost"}),
        says=":1: unknown brand 'ghost'",
    ),
    Case(
        "feedback-no-usable-rating",
        ("feedback", "import", "{f}"),
        _jsonl({"messages": LOGGED["messages"]}),
        says="no usable rating: 1 rows, ratings skipped (unrated 1)",
    ),
    Case(
        "feedback-deep",
        ("feedback", "import", "{f}"),
        '{"messages": ' + "[" * DEEP + "]" * DEEP + "}\n",
        says=":1: nested more than",
    ),
    Case(
        "feedback-nan",
        ("feedback", "import", "{f}"),
        '{"messages": [], "created_at": NaN}\n',
        says=":1: NaN is not a number JSON allows",
    ),
    Case(
        "feedback-fifo",
        ("feedback", "import", "{f}"),
        special=_fifo,
        process=True,
        says="not a regular file",
    ),
    Case("feedback-missing-file", ("feedback", "import", "{f}"), None, says="no such file"),
    # ---- settings: --env-file, the environment, the profile -------------------------------
    Case(
        "env-file-binary",
        ("--env-file", "{f}", "status"),
        BINARY,
        file="bad.env",
        says="bad.env:2: not valid UTF-8",
    ),
    Case(
        "env-file-nul",
        ("--env-file", "{f}", "status"),
        b"CRITICLOOP_CONCURRENCY=2\n\x00\n",
        file="bad.env",
        says="bad.env:2: a NUL byte",
    ),
    Case(
        "env-file-fifo",
        ("--env-file", "{f}", "status"),
        special=_fifo,
        file="bad.env",
        process=True,
        says="bad.env: not a regular file",
    ),
    Case(
        "env-file-bad-value",
        ("--env-file", "{f}", "status"),
        "CRITICLOOP_CONCURRENCY=lots\n",
        file="bad.env",
        says="CRITICLOOP_CONCURRENCY: Input should be a valid integer",
    ),
    Case(
        "env-bad-limit",
        ("status",),
        env={"CRITICLOOP_LIMITS__TEXT_CHARS": "0"},
        says="CRITICLOOP_LIMITS__TEXT_CHARS: Input should be greater than or equal to 1",
    ),
    Case(
        "profile-zero-weights",
        ("graph", "run"),
        "[tasks.general.critics]\nhelpfulness = 0\n",
        file="p.toml",
        env={"CRITICLOOP_PROFILES": "{f}"},
        says="p.toml: tasks.general.critics: the weights sum to 0",
    ),
    Case(
        "profile-binary",
        ("graph", "run"),
        BINARY,
        file="p.toml",
        env={"CRITICLOOP_PROFILES": "{f}"},
        says="p.toml: cannot read profiles: not valid UTF-8",
    ),
    Case(
        "profile-not-toml",
        ("graph", "run"),
        "[tasks\n",
        file="p.toml",
        env={"CRITICLOOP_PROFILES": "{f}"},
        says="p.toml: invalid TOML",
    ),
    Case(
        "profile-missing",
        ("graph", "run"),
        None,
        file="p.toml",
        env={"CRITICLOOP_PROFILES": "{f}"},
        says="p.toml: cannot read profiles: no such file",
    ),
    # ---- commands that name things --------------------------------------------------------
    Case("generate-unknown-prompt", ("generate", "-p", "ghost"), says="unknown prompt 'ghost'"),
    Case("graph-run-unknown-prompt", ("graph", "run", "-p", "ghost"), says="unknown prompt"),
    Case(
        "decide-unknown-case",
        ("graph", "decide", "graph-x", "ghost", "--prefer", "a", "--reviewer", "ana"),
        says="ghost",
    ),
    Case(
        "decide-binary-rewrite",
        ("graph", "decide", "graph-x", "p", "--prefer", "a", "--reviewer", "a", "--rewrite", "{f}"),
        BINARY,
        file="rewrite.txt",
        says="cannot read the rewrite",
    ),
    Case("evaluate-unknown-adapter", ("adapters", "evaluate", "v-ghost"), says="v-ghost"),
    Case("promote-unknown-adapter", ("adapters", "promote", "v-ghost"), says="v-ghost"),
    Case("calibrate-unknown-dataset", ("calibrate", "--dataset", "ghost"), says="ghost"),
    Case("traces-unknown-run", ("traces", "graph-ghost"), says="graph-ghost"),
    Case(
        "export-fifo",
        ("pairs", "export", "{f}"),
        special=_fifo,
        code=1,
        process=True,
        says="is not a regular file (a FIFO)",
    ),
    Case("generate-bad-option", ("generate", "--candidates", "0"), says="--candidates"),
    Case("train-bad-method", ("train", "--method", "sgd"), says="--method"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, settings, tmp_path):
    run_cli("init", "--no-demo", check=True)
    path = tmp_path / case.file
    if case.special is not None:
        case.special(path)
    elif case.content is not None:
        data = case.content if isinstance(case.content, bytes) else case.content.encode()
        path.write_bytes(data)
    args = [a.replace("{f}", str(path)) for a in case.args]
    env = {k: v.replace("{f}", str(path)) for k, v in case.env.items()}
    with Store.open(settings.db_path) as store:
        before = store.counts()
    if case.process:
        result = run_process(*args, env={**os.environ, **env}, timeout=60)
    else:
        result = run_cli(*args, env={**os.environ, **env})
    with Store.open(settings.db_path) as store:
        after = store.counts()
    if case.code == 0:  # not an error: it imports
        assert result.returncode == 0, result.stderr
        assert after != before
        return
    lines = result.stderr.strip().splitlines()
    assert result.returncode == case.code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("criticloop: error: ") or lines[0].startswith("Usage")
    assert case.says in lines[0], lines[0]
    assert after == before
