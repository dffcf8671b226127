"""The reviewer app driven by keys and clicks (Textual's Pilot), at 80x24 like an SSH terminal:
each key path checked in the store and in the case's LangGraph thread; snapshots of the main
screens; two apps on one database; a kill -9 right after a key press."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from criticloop.graphs.review import ReviewDesk
from criticloop.graphs.run import waiting_for_review
from criticloop.store import Store
from criticloop.tui import ReviewApp
from test_review import _thread

SIZE = (80, 24)
SNAPSHOTS = Path(__file__).parent / "snapshots"


def screen_text(app) -> str:
    """What the terminal shows, as text (the snapshot format: reviewable in a diff)."""
    lines = [strip.text.rstrip() for strip in app.screen._compositor.render_strips()]
    text = "\n".join(lines).rstrip() + "\n"
    text = re.sub(r"graph-\d{8}T\d{6}-[0-9a-f]{6}", "graph-<run>", text)
    # what depends on today: ages, and the calendar week or day a decision fell in
    text = re.sub(r"\b\d{4}-W\d{2}\b", "<week>", text)
    text = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", "<date>", text)
    return re.sub(r"\d+(\.\d)?[smhd] (old|ago)", "<age> \\2", text)


def check_snapshot(name: str, text: str, request) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if request.config.getoption("--update-snapshots") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        if not request.config.getoption("--update-snapshots"):
            pytest.fail(f"wrote the missing snapshot {path}; check it and commit it")
    assert text == path.read_text(), f"{name} changed; rerun with --update-snapshots if intended"


async def settled(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


def store_of(settings) -> Store:
    return Store.open(settings.db_path, create=False)


pytestmark = pytest.mark.slow  # the queue comes from a real graph run (review_template)


@pytest.mark.parametrize(
    ("key", "preference"), [("a", "a"), ("b", "b"), ("t", "tie")], ids=["A", "B", "tie"]
)
async def test_a_key_decides_and_the_thread_makes_the_pair(review_home, key, preference):
    app = ReviewApp(review_home, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        case = app.case
        await pilot.press(key)
        await settled(app, pilot)
        assert app.case is not None and app.case.id != case.id  # on to the next case

    with store_of(review_home) as store:
        (review,) = store.case_reviews(case.id)
        decision = store.get_decision(*case.id.split("/", 1))
        human = list(store.db["pairs"].rows_where("source = 'human'"))
    assert review["reviewer"] == "ana" and review["preference"] == preference
    assert decision["status"] == "done" and decision["outcome"] == "human"
    snapshot = _thread(review_home, case.id)
    assert not waiting_for_review(snapshot)
    if preference == "tie":
        assert human == [] and decision["pair_id"] is None
    else:
        (pair,) = human
        winner = case.a if preference == "a" else case.b
        assert pair["chosen_generation_id"] == winner.id
        assert snapshot.values["outcome"]["pair_id"] == pair["id"] == decision["pair_id"]


async def test_rewrite_with_the_keyboard(review_home):
    app = ReviewApp(review_home, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        case = app.case
        await pilot.press("tab", "r")  # rewrite B
        await pilot.pause()
        await pilot.press(*" Ask me if you want more.", "ctrl+s")
        await settled(app, pilot)
    rewritten = case.b.text + " Ask me if you want more."
    with store_of(review_home) as store:
        (review,) = store.case_reviews(case.id)
        pairs = list(store.db["pairs"].rows_where("source LIKE 'human%'"))
    assert review["kind"] == "rewrite" and review["rewrite"] == rewritten
    revisions = [p for p in pairs if p["source"] == "human-revision"]
    assert {p["chosen"] for p in revisions} == {rewritten} and len(revisions) == 2
    (human,) = [p for p in pairs if p["source"] == "human"]
    assert human["chosen_generation_id"] == case.b.id


async def test_stars_thumbs_and_comment_annotate_without_deciding(review_home):
    app = ReviewApp(review_home, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        case = app.case
        await pilot.press("5", "plus", "tab", "2", "minus", "c")
        await pilot.press(*"too vague", "enter")
        await pilot.pause()
        assert "★★☆☆☆ · thumb down · commented" in screen_text(app)
        await pilot.press("3")  # changing a rating replaces it
        await pilot.pause()
        assert app.case.id == case.id  # still in hand: annotations do not decide
    with store_of(review_home) as store:
        rows = store.case_reviews(case.id)
        assert store.get_decision(*case.id.split("/", 1))["status"] == "waiting"
    by = {(r["kind"], r["generation_id"]): r for r in rows}
    assert by[("stars", case.a.id)]["stars"] == 5 and by[("thumbs", case.a.id)]["thumbs"] == "up"
    assert by[("stars", case.b.id)]["stars"] == 3 and by[("thumbs", case.b.id)]["thumbs"] == "down"
    assert by[("comment", case.b.id)]["comment"] == "too vague"
    assert len(rows) == 5


async def test_undo_brings_the_case_back_and_the_thread_waits_again(review_home):
    app = ReviewApp(review_home, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        case = app.case
        await pilot.press("a")
        await settled(app, pilot)
        assert not waiting_for_review(_thread(review_home, case.id))
        await pilot.press("u")
        await settled(app, pilot)
        assert app.case.id == case.id
        assert waiting_for_review(_thread(review_home, case.id))
        with store_of(review_home) as store:
            assert store.db["pairs"].count_where("source = 'human'") == 0
        await pilot.press("b")  # decide again, differently
        await settled(app, pilot)
        await pilot.press("u", "u")  # the second undo: nothing left
        await settled(app, pilot)
    with store_of(review_home) as store:
        assert store.db["pairs"].count_where("source = 'human'") == 0
        assert store.get_decision(*case.id.split("/", 1))["status"] == "waiting"


async def test_skip_search_filter_and_clicks(review_home):
    app = ReviewApp(review_home, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        seen = [app.case.id]
        for _ in range(3):
            await pilot.press("s")
            seen.append(app.case.id)
        assert len(set(seen)) == 4
        await pilot.press("s")  # only skipped ones left: they come round again
        assert app.case.id == seen[0]

        await pilot.press("slash", *"France", "enter")
        await pilot.pause()
        assert app.case.prompt["id"] == "capital"
        assert "filter: search 'France'" in screen_text(app)

        await pilot.press("f")
        await pilot.pause()
        await pilot.click("#clear")
        await pilot.pause()
        assert not app.filters

        await pilot.press("f")
        await pilot.pause()
        app.screen.query_one("#brand").value = "lumen"
        await pilot.click("#apply")
        await pilot.pause()
        assert app.case.prompt["id"] == "read"

        await pilot.click("#pane-b")  # the mouse works too: focus B, then click "thumb up"
        await pilot.click("#keys", offset=(16, 1))
        await pilot.pause()
        assert app.side == "B"
    with store_of(review_home) as store:
        (row,) = store.case_reviews(app.case.id)
    assert row["kind"] == "thumbs" and row["generation_id"] == app.case.b.id


async def test_stats_screen_counts_decisions_and_agreement(review_home, request):
    app = ReviewApp(review_home, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        await pilot.press("a")
        await settled(app, pilot)
        await pilot.press("S")
        await pilot.pause()
        text = screen_text(app)
        assert "ana                      1" in text
        assert re.search(r"reward \(all\)\s+100\.0%\s+1", text)
        check_snapshot("stats", text, request)
        await pilot.press("escape")
        await pilot.pause()
        assert "criticloop review · ana" in screen_text(app)


async def test_main_screen_snapshots_dark_and_light(review_home, request):
    for theme in ("dark", "light"):
        app = ReviewApp(review_home, "ana", theme=theme)
        async with app.run_test(size=SIZE) as pilot:
            await settled(app, pilot)
            assert app.theme == f"textual-{theme}"
            check_snapshot("main", screen_text(app), request)
            app.save_screenshot(str(request.config.cache.mkdir("screens") / f"main-{theme}.svg"))


async def test_an_empty_queue_says_how_to_fill_it(store, settings, request):
    app = ReviewApp(settings, "ana")
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        text = screen_text(app)
        assert "Nothing to review" in text and "criticloop graph run" in text
        check_snapshot("empty", text, request)
        await pilot.press("a")  # nothing in hand: a bell and a note, no crash
        await pilot.pause()


async def test_two_apps_never_hold_the_same_case(review_home):
    first = ReviewApp(review_home, "ana")
    second = ReviewApp(review_home, "bo")
    async with first.run_test(size=SIZE) as one, second.run_test(size=SIZE) as two:
        await settled(first, one)
        await settled(second, two)
        held = {first.case.id, second.case.id}
        assert len(held) == 2
        await one.press("a")
        await settled(first, one)
        assert first.case is not None and first.case.id not in held  # not bo's, not the old one


# ---- real processes in a real terminal --------------------------------------------------------


def _spawn_review(settings, reviewer: str) -> tuple[subprocess.Popen, int]:
    """``criticloop review`` in a pseudo-terminal of 80x24, as over SSH."""
    import fcntl
    import struct
    import termios

    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "CRITICLOOP_HOME": str(settings.home), "TERM": "xterm-256color"}
    exe = Path(sys.executable).parent / "criticloop"
    proc = subprocess.Popen(
        [str(exe), "review", "--reviewer", reviewer],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        start_new_session=True,
    )
    os.close(secondary)
    return proc, main


def _drain(fd: int, seconds: float) -> bytes:
    out, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _wait_for(condition, timeout: float, fd: int) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _drain(fd, 0.1)  # keep the terminal flowing
        if condition():
            return
    raise AssertionError("timed out")


def _leases(settings) -> list[dict]:
    with store_of(settings) as store:
        return list(store.db["leases"].rows)


def test_two_processes_lease_different_cases(review_home):
    apps = [_spawn_review(review_home, name) for name in ("ana", "bo")]
    try:
        _wait_for(lambda: len(_leases(review_home)) == 2, 60, apps[0][1])
        leases = _leases(review_home)
        assert len({lease["decision_id"] for lease in leases}) == 2
        assert {lease["reviewer"] for lease in leases} == {"ana", "bo"}
    finally:
        for proc, fd in apps:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            os.close(fd)


def test_a_verdict_survives_kill_9_right_after_the_key_press(review_home):
    proc, fd = _spawn_review(review_home, "kim")
    try:
        _wait_for(lambda: len(_leases(review_home)) == 1, 60, fd)
        (lease,) = _leases(review_home)
        _drain(fd, 1.0)
        os.write(fd, b"b")

        def verdict_recorded() -> bool:
            with store_of(review_home) as store:
                return bool(store.case_reviews(lease["decision_id"]))

        end = time.monotonic() + 30
        while not verdict_recorded():  # kill the moment the verdict is in the database
            assert time.monotonic() < end, "the verdict never reached the database"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(fd)

    # The next desk settles whatever the killed app did not finish; nothing is doubled.
    desk = ReviewDesk(review_home, "lee")
    desk.settle()
    desk.settle()
    desk.close()
    with store_of(review_home) as store:
        (review,) = store.case_reviews(lease["decision_id"])
        decision = store.get_decision(*lease["decision_id"].split("/", 1))
        human = list(store.db["pairs"].rows_where("source = 'human'"))
    assert review["reviewer"] == "kim" and review["preference"] == "b"
    assert decision["status"] == "done" and len(human) == 1
    assert human[0]["chosen_generation_id"] == decision["rejected_generation_id"]


@pytest.mark.parametrize("where", ["no terminal", "TERM=dumb"])
def test_review_without_a_usable_terminal_exits_at_once_and_leases_nothing(review_home, where):
    from conftest import run_process

    env = {**os.environ, "CRITICLOOP_HOME": str(review_home.home), "TERM": "xterm-256color"}
    if where == "no terminal":
        result = run_process("review", "--reviewer", "ana", env=env, stdin=subprocess.DEVNULL)
        code, err = result.returncode, result.stderr
    else:
        main, secondary = pty.openpty()
        exe = Path(sys.executable).parent / "criticloop"
        proc = subprocess.Popen(
            [str(exe), "review", "--reviewer", "ana"],
            stdin=secondary,
            stdout=secondary,
            stderr=subprocess.PIPE,
            env={**env, "TERM": "dumb"},
            text=True,
        )
        os.close(secondary)
        try:
            code, err = proc.wait(timeout=30), proc.stderr.read()
        finally:
            os.close(main)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "criticloop review needs an interactive terminal" in err
    assert (where == "TERM=dumb") == ("TERM=dumb" in err)
    assert _leases(review_home) == []
