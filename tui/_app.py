"""``criticloop review``: the reviewer app over the queue of escalated cases.

    criticloop review --reviewer ana

One case at a time, most uncertain first, leased to this app so a second reviewer never gets
it at the same time. A key press records the verdict in the store at once; resuming the case's
graph thread (which makes the pair) runs on a worker thread, one job after another, so undo
always follows the resume it undoes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from ..errors import CriticloopError
from ..graphs.review import ReviewCase, ReviewDesk
from ..settings import Settings
from ..store import ALL_CASES, CaseFilter
from ._screens import FilterScreen, RewriteScreen, StatsScreen, TextPrompt
from ._widgets import (
    KEYS,
    CandidatePane,
    KeyBar,
    annotations_text,
    context_markup,
    why_markup,
)

log = logging.getLogger(__name__)
THEMES = {"dark": "textual-dark", "light": "textual-light"}


class ReviewScreen(Screen[None]):
    """The case in hand: context, why it was escalated, candidates A and B side by side."""

    BINDINGS = [
        Binding("a", "verdict('a')", "A better"),
        Binding("b", "verdict('b')", "B better"),
        Binding("t", "verdict('tie')", "tie"),
        Binding("r", "rewrite", "rewrite"),
        *[Binding(str(n), f"stars({n})", f"{n} stars") for n in range(1, 6)],
        Binding("plus", "thumbs('up')", "thumb up"),
        Binding("minus", "thumbs('down')", "thumb down"),
        Binding("c", "comment", "comment"),
        Binding("tab,shift+tab", "switch", "A/B", priority=True),
        Binding("left", "side('A')", "A", show=False),
        Binding("right", "side('B')", "B", show=False),
        Binding("u", "undo", "undo"),
        Binding("s", "skip", "skip"),
        Binding("f", "filter", "filter"),
        Binding("slash", "search", "search"),
        Binding("S", "stats", "stats"),
        Binding("q", "quit", "quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Vertical(id="case"):
            with VerticalScroll(id="context"):
                yield Static(id="context-text")
            yield Static(id="why")
            with Horizontal(id="candidates"):
                yield CandidatePane("A", id="pane-a")
                yield CandidatePane("B", id="pane-b")
        yield Static(id="empty")
        yield KeyBar(KEYS, id="keys")

    @property
    def review(self) -> ReviewApp:
        return self.app  # type: ignore[return-value]

    def on_mount(self) -> None:
        self.review.next_case()

    def refresh_status(self) -> dict[str, int]:
        app = self.review
        queue = app.desk.queue(app.filters)
        where = f" · filter: {app.filters.describe()}" if app.filters else ""
        status = (
            f" criticloop review · {app.desk.reviewer} · {queue['open']} open"
            f" of {queue['waiting']} waiting{where}"
        )
        self.query_one("#status", Static).update(status)
        if app.case is None:
            self.query_one("#empty", Static).update(Content.from_markup(empty_markup(queue, app)))
        return queue

    def show(self, case: ReviewCase | None) -> None:
        app = self.review
        self.set_class(case is None, "-empty")
        self.refresh_status()
        if case is None:
            return
        n = app.desk.reviews_per_item
        self.query_one("#context-text", Static).update(Content.from_markup(context_markup(case, n)))
        self.query_one("#context", VerticalScroll).scroll_home(animate=False)
        self.query_one("#why", Static).update(Content.from_markup(why_markup(case, n)))
        for pane in self.query(CandidatePane):
            pane.show(case)

    def on_descendant_focus(self, event: Any) -> None:
        if isinstance(event.widget, CandidatePane):
            self.review.side = event.widget.label

    # ---- actions: each forwards to the app, which owns the desk and the case in hand ----------

    def action_verdict(self, preference: str) -> None:
        self.review.decide(preference)

    def action_rewrite(self) -> None:
        self.review.rewrite()

    def action_stars(self, n: int) -> None:
        self.review.annotate(stars=int(n))

    def action_thumbs(self, which: str) -> None:
        self.review.annotate(thumbs=which)

    def action_comment(self) -> None:
        self.review.comment()

    def action_switch(self) -> None:
        self.action_side("B" if self.review.side == "A" else "A")

    def action_side(self, label: str) -> None:
        self.review.side = label
        self.query_one(f"#pane-{label.lower()}").focus()

    def action_undo(self) -> None:
        self.review.undo()

    def action_skip(self) -> None:
        self.review.skip()

    def action_filter(self) -> None:
        self.review.choose_filter()

    def action_search(self) -> None:
        self.review.search()

    def action_stats(self) -> None:
        self.app.push_screen(StatsScreen(self.review.desk.stats))

    async def action_quit(self) -> None:
        await self.app.action_quit()


def empty_markup(queue: dict[str, int], app: ReviewApp) -> str:
    if queue["waiting"] == 0 and app.decided:
        return (
            f"[b]Queue clear.[/b] You decided {len(app.decided)} case(s) in this session; "
            "their pairs are in the store (criticloop pairs export FILE).\n\n"
            "[b]S[/b] stats · [b]u[/b] undo the last · [b]q[/b] quit"
        )
    if queue["waiting"] == 0:
        return (
            "[b]Nothing to review:[/b] no escalated case is waiting.\n\n"
            "Cases come from the nightly job: [b]criticloop graph run[/b] judges new prompts and "
            "escalates the ones its critics are unsure about (import prompts first with "
            "[b]criticloop import FILE[/b]). Then run [b]criticloop review[/b] again.\n\n"
            "[b]S[/b] stats · [b]q[/b] quit"
        )
    if queue["matching"] == 0:
        return (
            f"[b]No waiting case matches the filter[/b] ({app.filters.describe()}); "
            f"{queue['waiting']} wait in all.\n\n[b]f[/b] change the filter · [b]q[/b] quit"
        )
    if queue["settling"] == queue["matching"]:
        return "[b]All decided.[/b] Making the last pairs...\n\n[b]S[/b] stats · [b]q[/b] quit"
    others = queue["matching"] - queue["awaiting_others"] - queue["settling"]
    lines = ["[b]Nothing open to you right now.[/b]"]
    if queue["awaiting_others"]:
        lines.append(
            f"{queue['awaiting_others']} case(s) have your verdict and wait for other reviewers."
        )
    if others > 0:
        lines.append(f"{others} case(s) are with other reviewers; they come back if let go.")
    lines.append("\n[b]S[/b] stats · [b]q[/b] quit")
    return "\n".join(lines)


class ReviewApp(App[None]):
    """Review escalated cases; every decision goes to the store at once."""

    TITLE = "criticloop review"
    CSS_PATH = "review.tcss"
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        settings: Settings,
        reviewer: str,
        *,
        filters: CaseFilter = ALL_CASES,
        theme: str | None = None,
        desk: ReviewDesk | None = None,
    ):
        super().__init__()
        self.desk = desk or ReviewDesk(settings, reviewer)
        self.filters = filters
        self.case: ReviewCase | None = None
        self.side = "A"
        self.skipped: list[str] = []
        self.decided: list[str] = []  # this session's verdicts, for undo
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-graph")
        self.main = ReviewScreen()
        self.theme = THEMES[theme or settings.review.theme]

    def get_default_screen(self) -> Screen:
        return self.main

    def on_mount(self) -> None:
        # Cases whose verdicts are in but whose threads never resumed (an app killed between
        # the two) are resumed first.
        self.graph_job(self.desk.settle, None, then=self._settled_on_start, what="resuming")
        self.set_interval(max(5.0, self.desk.lease_seconds / 3), self.desk.renew_lease)

    def _settled_on_start(self, outcomes: list[dict[str, Any]]) -> None:
        if outcomes:
            self.notify(f"resumed {len(outcomes)} case(s) decided earlier", timeout=4)

    async def on_unmount(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        self.desk.close()

    # ---- moving through the queue --------------------------------------------------------------

    def next_case(self, only: str | None = None) -> None:
        case = self.desk.next_case(self.filters, self.skipped, only=only)
        if case is None and only is None and self.skipped:
            self.skipped.clear()
            case = self.desk.next_case(self.filters)
            if case is not None:
                self.notify("back to the cases you skipped", timeout=3)
        self.case = case
        self.side = "A"
        self.main.show(case)
        if case is not None:
            self.main.query_one("#pane-a").focus()

    def _guard(self) -> ReviewCase | None:
        if self.case is None:
            self.bell()
            self.notify("no case in hand", severity="warning", timeout=2)
        return self.case

    def decide(self, preference: str, rewrite: str | None = None) -> None:
        case = self._guard()
        if case is None:
            return
        try:
            complete = self.desk.verdict(case.id, preference, rewrite=rewrite)
        except CriticloopError as exc:
            self.notify(str(exc), severity="error")
            self.next_case()
            return
        self.decided.append(case.id)
        what = {"a": "A better", "b": "B better", "tie": "tie"}[preference]
        if rewrite is not None:
            what = f"rewrote {preference.upper()}"
        pid = case.prompt["id"]
        if complete:
            self.graph_job(self.desk.settle, case.id, what=f"resuming {pid}")
            self.notify(f"{pid}: {what}", timeout=2)
        else:
            self.notify(f"{pid}: {what} (waiting for more reviewers)", timeout=2)
        self.next_case()

    def annotate(self, **annotation: Any) -> None:
        case = self._guard()
        if case is None:
            return
        try:
            self.desk.annotate(case, self.side, **annotation)
        except CriticloopError as exc:
            self.notify(str(exc), severity="error")
            return
        self.case = self.desk.with_reviews(case)
        for pane in self.main.query(CandidatePane):
            pane.border_subtitle = annotations_text(self.case, pane.label)

    def comment(self) -> None:
        case = self._guard()
        if case is None:
            return
        existing = case.annotation("comment", self.side)

        def done(text: str | None) -> None:
            if text:
                self.annotate(comment=text)

        self.push_screen(
            TextPrompt(
                f"Comment on {self.side}",
                existing["comment"] if existing else "",
                "what is right or wrong with it",
            ),
            done,
        )

    def rewrite(self) -> None:
        case = self._guard()
        if case is None:
            return
        side = self.side
        original = case.candidate(side).text

        def done(text: str | None) -> None:
            if text is None:
                return
            if not text.strip():
                self.notify("an empty rewrite is not saved", severity="warning")
            elif text.strip() == original.strip():
                self.notify(
                    f"unchanged: press {side.lower()} to prefer {side} as it is",
                    severity="warning",
                )
            else:
                self.decide(side.lower(), rewrite=text)

        self.push_screen(RewriteScreen(side, original), done)

    def skip(self) -> None:
        case = self._guard()
        if case is None:
            return
        self.skipped.append(case.id)
        self.next_case()

    def undo(self) -> None:
        if not self.decided:
            self.notify("nothing to undo in this session", severity="warning", timeout=2)
            return
        case_id = self.decided.pop()

        def back(reopened: bool) -> None:
            self.next_case(only=case_id)
            if self.case is None or self.case.id != case_id:
                self.next_case()
            self.notify(f"undone: {case_id.split('/', 1)[1]} is back", timeout=2)

        self.graph_job(self.desk.undo, case_id, then=back, what="undo")

    def choose_filter(self) -> None:
        brands = self.desk.store.brand_names()
        runs = self.desk.store.waiting_runs()

        def done(filters: CaseFilter | None) -> None:
            if filters is not None:
                self.filters = filters
                self.skipped.clear()
                self.next_case()

        self.push_screen(FilterScreen(self.filters, brands, runs), done)

    def search(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.filters = replace(self.filters, search=text or None)
                self.skipped.clear()
                self.next_case()

        self.push_screen(
            TextPrompt("Search prompts and candidates", self.filters.search or "", "words"),
            done,
        )

    # ---- the graph worker ----------------------------------------------------------------------

    def graph_job(
        self,
        fn: Callable[..., Any],
        *args: Any,
        then: Callable[[Any], None] | None = None,
        what: str = "",
    ) -> None:
        """Run ``fn`` on the one graph thread (jobs run in order); ``then`` gets its result."""

        async def job() -> None:
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._pool, fn, *args)
            except Exception as exc:  # noqa: BLE001 - shown; the verdict itself is saved
                log.exception("%s failed", what)
                self.notify(
                    f"{what} failed: {type(exc).__name__}: {exc}. "
                    "Verdicts are saved; the next start retries.",
                    severity="error",
                    timeout=10,
                )
                return
            if then is not None:
                then(result)
            if self.case is None:  # the queue may have changed: a case freed, or all done
                self.next_case()
            else:
                self.main.refresh_status()

        self.run_worker(job(), group="graph", exit_on_error=False)
