"""TUI: the Textual app where people review the cases the critics escalate.

    criticloop review [--reviewer NAME] [--brand ID] [--task-type T] [--run ID] [--search WORDS]

The only package that imports ``textual``. The app is a thin face over
:class:`criticloop.graphs.review.ReviewDesk`, which records verdicts and resumes graph threads.
"""

from ._app import ReviewApp, ReviewScreen

__all__ = ["ReviewApp", "ReviewScreen"]
