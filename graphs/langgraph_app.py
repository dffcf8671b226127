"""Entry point for LangGraph's own tooling (``langgraph dev``/``langgraph build``, Studio).

``langgraph.json`` at the repository root points here. The server brings its own checkpointer;
the graph reads and writes the criticloop database named by the usual settings
(``CRITICLOOP_HOME``), which ``criticloop init`` must have created.
"""

from __future__ import annotations

from criticloop.agents import Sampling
from criticloop.graphs.feedback import ThreadStores, build_feedback_graph, with_resources
from criticloop.graphs.run import make_resources
from criticloop.reward import Profiles
from criticloop.settings import Settings


def make_graph():
    """Compile the feedback graph with the settings from the environment, bound to the
    resources they make (the context of every run the server starts)."""
    settings = Settings.load()
    settings.apply_offline_policy()
    defaults = settings.generation
    sampling = Sampling(
        defaults.max_new_tokens, defaults.temperature, defaults.top_p, defaults.seed
    )
    resources = make_resources(
        settings,
        ThreadStores(settings.db_path),
        Profiles.load(settings.profiles),
        sampling,
        defaults.candidates,
    )
    # The server passes JSON as a run's context; the nodes' resources ride in the graph's config.
    return with_resources(build_feedback_graph(resources), resources)
