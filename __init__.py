"""criticloop: turn model outputs into training signal.

The repository root is this package. Its parts:

- ``criticloop.store``: the SQLite database and the verbs over it.
- ``criticloop.agents``: the models (policy, embedder) and the critic agents.
- ``criticloop.graphs``: the LangGraph jobs and the ``criticloop`` command line.
- ``criticloop.training``: DPO/PPO/GRPO LoRA runners and the adapter registry.
- ``criticloop.tui``: the Textual reviewer app.

``settings`` holds the one configuration object; ``errors`` the domain errors the CLI turns
into exit codes.
"""

__version__ = "0.1.0"
