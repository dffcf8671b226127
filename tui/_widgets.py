"""The pieces of the review screen: the key bar, the case's context and its two candidates."""

from __future__ import annotations

from typing import Any

from textual.containers import VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.widget import Widget
from textual.widgets import Static

from ..graphs.review import ReviewCandidate, ReviewCase

KEYS: list[tuple[str, str, str]] = [
    ("a", "verdict('a')", "A better"),
    ("b", "verdict('b')", "B better"),
    ("t", "verdict('tie')", "tie"),
    ("r", "rewrite", "rewrite"),
    ("1-5", "", "stars"),
    ("+", "thumbs('up')", "thumb up"),
    ("-", "thumbs('down')", "thumb down"),
    ("c", "comment", "comment"),
    ("tab", "switch", "A/B"),
    ("u", "undo", "undo"),
    ("s", "skip", "skip"),
    ("f", "filter", "filter"),
    ("/", "search", "search"),
    ("S", "stats", "stats"),
    ("q", "quit", "quit"),
]
"""What the review screen's key bar shows (key, screen action, label); every item is clickable."""


class KeyBar(Widget):
    """Every key of the screen, packed into as many lines as the width needs (a one-line footer
    cannot show them all in 80 columns). Clicking an item runs its action."""

    DEFAULT_CSS = """
    KeyBar { height: auto; background: $panel; color: $text; padding: 0 1; }
    """

    def __init__(self, keys: list[tuple[str, str, str]], **kwargs: Any):
        super().__init__(**kwargs)
        self.keys = keys

    def render(self) -> Content:
        return Content.from_markup("\n".join(self._pack(self.size.width)))

    def get_content_height(self, container: Any, viewport: Any, width: int) -> int:
        return len(self._pack(width))

    def _pack(self, width: int) -> list[str]:
        width = max(20, width - 2)
        lines: list[str] = []
        line, used = "", 0
        for key, action, label in self.keys:
            if action:
                item = f"[@click=screen.{action}][reverse] {key} [/reverse] {label}[/]  "
                plain = f" {key}  {label}  "
            else:  # 1-5: each digit its own click
                digits = " ".join(f"[@click=screen.stars({n})]{n}[/]" for n in range(1, 6))
                item = f"[reverse] {digits} [/reverse] {label}  "
                plain = f" 1 2 3 4 5  {label}  "
            if used + len(plain) > width and line:
                lines.append(line.rstrip())
                line, used = "", 0
            line += item
            used += len(plain)
        lines.append(line.rstrip())
        return lines


def context_markup(case: ReviewCase, reviews_per_item: int) -> str:
    """The prompt as the model saw it: task, brand and campaign, persona, the conversation."""
    prompt = case.prompt
    head = [f"[b]{escape(prompt['task_type'])}[/b]", f"prompt {escape(prompt['id'])}"]
    if case.brand:
        head.append(f"brand {escape(case.brand['name'])}")
    if case.campaign:
        head.append(f"campaign {escape(case.campaign['name'])}")
    lines = [" · ".join(head)]
    messages = prompt["messages"]
    for i, message in enumerate(messages):  # the conversation first: it is what was asked
        text = escape(message["content"])
        role = escape(message["role"])
        if i == len(messages) - 1:
            lines.append(f"[b]{role}: {text}[/b]")
        else:
            lines.append(f"[dim]{role}:[/dim] {text}")
    if prompt.get("persona"):
        lines.append(f"[i]persona:[/i] {escape(prompt['persona'])}")
    if case.campaign:
        lines.append(f"[i]ad copy:[/i] {escape(case.campaign['ad_copy'])}")
    if case.brand and case.brand.get("voice", {}).get("tone"):
        lines.append(f"[i]brand voice:[/i] {escape(case.brand['voice']['tone'])}")
    return "\n".join(lines)


def why_markup(case: ReviewCase, reviews_per_item: int) -> str:
    d = case.decision
    parts = [f"[b]Escalated:[/b] {escape(d['reason'])}"]
    if d.get("uncertainty") is not None:
        parts.append(f"uncertainty {d['uncertainty']:.2f}")
    if d.get("margin") is not None:
        parts.append(f"margin {d['margin']:+.3f}")
    if reviews_per_item > 1:
        parts.append(f"verdicts {case.verdicts_in}/{reviews_per_item}")
    return " · ".join(parts)


def stars_text(n: int | None) -> str:
    return "★" * n + "☆" * (5 - n) if n else ""


class CandidatePane(VerticalScroll, can_focus=True):
    """One candidate: its text, then every critic's score, confidence and rationale."""

    DEFAULT_CSS = """
    CandidatePane { width: 1fr; height: 1fr; border: round $secondary; padding: 0 1; }
    CandidatePane:focus { border: heavy $accent; }
    CandidatePane > .text { margin-bottom: 1; }
    CandidatePane > .critics { color: $text-muted; }
    """

    def __init__(self, label: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.label = label

    def compose(self):
        yield Static(classes="text")
        yield Static(classes="critics")

    def show(self, case: ReviewCase) -> None:
        candidate = case.candidate(self.label)
        reward = candidate.reward
        total = reward.get("total")
        title = f"{self.label}" + (" · critics' choice" if self.label == "A" else "")
        if reward.get("vetoes"):
            title += f" · VETO {', '.join(reward['vetoes'])}"
        elif total is not None:
            title += f" · reward {total:.3f}"
        self.border_title = title
        self.border_subtitle = annotations_text(case, self.label)
        text = escape(candidate.text) or "[dim](empty)[/dim]"
        if candidate.finish_reason == "length":
            text += " [dim](cut off at the token limit)[/dim]"
        self.query_one(".text", Static).update(Content.from_markup(text))
        self.query_one(".critics", Static).update(Content.from_markup(_critics(candidate)))
        self.scroll_home(animate=False)


def annotations_text(case: ReviewCase, label: str) -> str:
    parts = []
    stars = case.annotation("stars", label)
    if stars:
        parts.append(stars_text(stars["stars"]))
    thumbs = case.annotation("thumbs", label)
    if thumbs:
        parts.append(f"thumb {thumbs['thumbs']}")
    if case.annotation("comment", label):
        parts.append("commented")
    verdict = case.verdict()
    if verdict and verdict["kind"] == "rewrite" and verdict["preference"] == label.lower():
        parts.append("rewritten")
    return " · ".join(parts)


def _critics(candidate: ReviewCandidate) -> str:
    lines = ["[b]critic          score  conf[/b]"]
    for c in candidate.critiques:
        score = "  none" if c["score"] is None else f"{c['score']:6.2f}"
        confidence = "" if c["confidence"] is None else f"{c['confidence']:6.2f}"
        violations = (c.get("evidence") or {}).get("violations") or []
        veto = (
            " [b]VETO[/b]" if c["critic"] == "compliance" and c["score"] == 0 and violations else ""
        )
        lines.append(f"[b]{escape(c['critic']):<14}[/b]{score}{confidence}{veto}")
        lines.append(f"  {escape(c['rationale'])}")
    return "\n".join(lines)
