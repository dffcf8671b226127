"""The reviewer app's other screens: comment, rewrite, filter, search, and the stats."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from ..store import CaseFilter
from ..vocab import TASK_TYPES
from ._widgets import KeyBar


class TextPrompt(ModalScreen[str | None]):
    """One line of text: a comment, or a search. Enter saves, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = ""):
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(value=self.value, placeholder=self.placeholder, compact=True)
            yield Static("[b]enter[/b] save · [b]esc[/b] cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class RewriteScreen(ModalScreen[str | None]):
    """Edit a candidate into the response it should have been; it becomes the chosen one."""

    BINDINGS = [
        Binding("ctrl+s", "save", "save", priority=True),
        Binding("escape", "cancel", "cancel"),
    ]

    def __init__(self, label: str, text: str):
        super().__init__()
        self.label = label
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog tall"):
            yield Label(f"Rewrite {self.label} into the response it should have been")
            yield TextArea(self.text, soft_wrap=True, id="rewrite")
            yield Static(
                "[@click=screen.save][b]ctrl+s[/b] save[/] · "
                "[@click=screen.cancel][b]esc[/b] cancel[/]",
                classes="hint",
            )

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FilterScreen(ModalScreen[CaseFilter | None]):
    """Offer only the cases of one brand, task type or run, or matching a search."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: CaseFilter, brands: list[tuple[str, str]], runs: list[str]) -> None:
        super().__init__()
        self.current = current
        self.brands = brands
        self.runs = runs

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(classes="dialog"):
            yield Label("Filter the queue (blank: any)")
            yield Select(
                [(name, key) for key, name in self.brands],
                prompt="brand: any",
                value=c.brand or Select.NULL,
                id="brand",
                compact=True,
            )
            yield Select(
                [(t, t) for t in TASK_TYPES],
                prompt="task type: any",
                value=c.task_type or Select.NULL,
                id="task",
                compact=True,
            )
            yield Select(
                [(r, r) for r in self.runs],
                prompt="run: any",
                value=c.run_id or Select.NULL,
                id="run",
                compact=True,
            )
            yield Input(
                value=c.search or "",
                placeholder="search words (prompt or candidates)",
                compact=True,
            )
            with Horizontal(classes="buttons"):
                yield Button("Apply", variant="primary", id="apply", compact=True)
                yield Button("Clear", id="clear", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self._apply()
        elif event.button.id == "clear":
            self.dismiss(CaseFilter())
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._apply()

    def _apply(self) -> None:
        def value(widget_id: str) -> str | None:
            v = self.query_one(f"#{widget_id}", Select).value
            return None if v is Select.NULL else str(v)

        search = self.query_one(Input).value.strip() or None
        self.dismiss(CaseFilter(value("brand"), value("task"), value("run"), search))

    def action_cancel(self) -> None:
        self.dismiss(None)


class StatsScreen(Screen[None]):
    """Queue size and age, decisions per reviewer, agreement of critics with people (per critic
    and overall, with counts) and between people, and the latest runs."""

    BINDINGS = [
        Binding("escape,S,q", "back", "back"),
        Binding("r", "refresh", "refresh"),
    ]
    KEYS = [("esc", "back", "back"), ("r", "refresh", "refresh")]

    def __init__(self, load: Any):
        super().__init__()
        self.load = load

    def compose(self) -> ComposeResult:
        yield Static(" criticloop review · stats", id="status")
        with VerticalScroll(id="stats-body"):
            yield Static(id="stats")
        yield KeyBar(self.KEYS, id="keys")

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#stats", Static).update(Content.from_markup(stats_markup(self.load())))

    def action_back(self) -> None:
        self.dismiss(None)


def _age(stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _rate(agree: int, n: int) -> str:
    return f"{agree / n:6.1%}" if n else "     -"


def stats_markup(stats: dict[str, Any]) -> str:
    queue = stats["queue"]
    out = [
        "[b]Queue[/b]",
        f"  waiting {queue['waiting']} · oldest {_age(queue['oldest'])} old",
    ]
    for row in queue["by_run"]:
        out.append(
            f"  {escape(row['run_id'] or '-')}: {row['n']} waiting, {_age(row['oldest'])} old"
        )

    out += ["", "[b]Decisions per reviewer[/b]"]
    out.append("  reviewer          verdicts rewrites stars thumbs comments  last")
    for r in stats["reviewers"]:
        out.append(
            f"  {escape(r['reviewer'][:16]):<16} {r['verdicts'] or 0:>9} {r['rewrites'] or 0:>8} "
            f"{r['stars'] or 0:>5} {r['thumbs'] or 0:>6} {r['comments'] or 0:>8}  {_age(r['last'])} ago"
        )
    if not stats["reviewers"]:
        out.append("  none yet")
    for dataset, n in (stats.get("imported") or {}).items():
        out.append(f"  imported: {n} labels from {escape(dataset)} (criticloop labels list)")

    out += ["", "[b]Critics vs people[/b] (on cases a person preferred A or B)"]
    out.append("  critic          agree      n  no preference")
    for name, c in stats["critics"].items():
        label = "reward (all)" if name == "overall" else name
        out.append(
            f"  {escape(label):<14} {_rate(c['agree'], c['n'])} {c['n']:>6}  {c['no_preference']:>6}"
        )
    if not stats["critics"]:
        out.append("  no verdicts yet")
    elif stats["critics"].get("overall", {}).get("human_tie"):
        out.append(f"  people judged {stats['critics']['overall']['human_tie']} case(s) a tie")

    people = stats["people"]
    out += ["", "[b]People vs people[/b] (cases with more than one verdict)"]
    if people["cases"]:
        kappa = "-" if people["kappa"] is None else f"{people['kappa']:.2f}"
        out.append(
            f"  {people['cases']} cases, {people['pairs']} reviewer pairs: "
            f"agree {_rate(people['agree'], people['pairs']).strip()}, Fleiss' kappa {kappa}"
        )
    else:
        out.append("  none (set CRITICLOOP_REVIEW__REVIEWS_PER_ITEM=2 for double review)")

    out += ["", "[b]Ratings of single answers[/b] (what SFT and KTO learn from)"]
    ratings = stats.get("ratings") or {"by_source": {}, "revisions": {}}
    for source, c in ratings["by_source"].items():
        out.append(
            f"  {escape(source):<10} {c['good']:>5} good {c['bad']:>5} bad {c['neutral']:>5} neither"
            f" {c['commented']:>5} with a comment"
        )
    if not ratings["by_source"]:
        out.append("  none yet (thumbs or stars here, or criticloop feedback import)")
    for mode, outcomes in ratings["revisions"].items():
        done = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items())
        out.append(f"  rated down, rewritten ({escape(mode)}): {done}")

    out += ["", *calibration_markup(stats.get("calibration") or {})]

    out += ["", "[b]Recent runs[/b]"]
    for run in stats["runs"]:
        s = run.get("summary") or {}
        pairs = sum((s.get("pairs") or {}).values())
        out.append(
            f"  {escape(run['id'])} {run['status']:<7} {s.get('prompts', '-')} prompts, "
            f"{pairs} pairs, {(s.get('outcomes') or {}).get('escalated', 0)} escalated"
        )
    if not stats["runs"]:
        out.append("  none yet: criticloop graph run")
    return "\n".join(out)


_BAR = 20


def _bar(value: float | None, width: int = _BAR) -> str:
    if value is None:
        return " " * width
    filled = round(max(0.0, min(1.0, value)) * width)
    return "█" * filled + "·" * (width - filled)


def calibration_markup(cal: dict[str, Any]) -> list[str]:
    """The calibrated reward model, its reliability diagram as text, and the drift trend."""
    out = ["[b]Calibration[/b] (criticloop calibrate)"]
    if "error" in cal:
        return [*out, f"  unavailable: {escape(cal['error'])}"]
    model = cal.get("model")
    if model is None:
        fitted = cal.get("fitted", 0)
        out.append(
            "  no active reward model: the profile's thresholds escalate"
            + (f" ({fitted} fitted, none active)" if fitted else "")
        )
    else:
        policy, held = model["policy"], model["held_out"]
        metrics = held.get("model") or {}
        out.append(
            f"  {escape(model['version'])} on {model['labels']} labelled pairs; held out "
            f"{held.get('n') or 0}:"
        )
        out.append(
            f"    accuracy {metrics.get('accuracy', 0):.1%} "
            f"(longer wins {(held.get('length') or {}).get('accuracy', 0):.1%}) · "
            f"ECE {metrics.get('ece', 0):.3f} · Brier {metrics.get('brier', 0):.3f}"
        )
        if policy.get("threshold") is not None:
            out.append(
                f"  decides alone at confidence >= {policy['threshold']:.2f}: "
                f"{policy['coverage']:.0%} of pairs, >= {policy['lower_bound']:.0%} agree "
                f"({1 - policy['risk']:.0%} sure)"
            )
        out.append("  reliability: predicted     people        n")
        for b in model["reliability"]:
            if not b["n"]:
                continue
            out.append(
                f"   {b['lo']:.1f}-{b['hi']:.1f} {b['mean_p']:>5.2f} {_bar(b['mean_p'], 8)} "
                f"{b['observed']:>5.2f} {_bar(b['observed'], 8)} {b['n']:>5}"
            )
    drift = cal.get("drift") or {}
    windows = drift.get("windows") or []
    out.append(
        f"  agreement with people per {drift.get('window', 'window')}: {escape(drift.get('basis', ''))}"
    )
    if not windows:
        out.append("   no decisions by people to check yet")
    for w in windows[-8:]:
        lo, hi = w["ci"] or (0, 0)
        flag = " [b]SHIFT[/b]" if w["fired"] else ""
        out.append(
            f"   {escape(w['window']):<10} {_bar(w['agreement'], 16)} "
            f"{(w['agreement'] or 0):>6.1%} ({lo:.0%}-{hi:.0%}) n={w['n']}{flag}"
        )
    for flag in drift.get("flags") or []:
        out.append(f"   [b]flag[/b]: {escape(flag)}")
    return out
