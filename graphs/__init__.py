"""Graphs: the LangGraph feedback graph and the jobs that drive it.

``criticloop generate`` is the batch generation job (``run_generate``); the feedback graph
(``criticloop graph run``: state, nodes, routing, the run, review and tracing) is built on top
of it. What the critics' scores mean lives a floor below, in ``criticloop.reward``.
"""

from ._generate import GenerateSummary, run_generate
from ._logs import log_revision_pending, run_log_revision

__all__ = ["GenerateSummary", "log_revision_pending", "run_generate", "run_log_revision"]
