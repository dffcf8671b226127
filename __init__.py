"""criticloop: turn model outputs into training signal.

The repository root is this package. Its floors, top to bottom (each imports only those below):

- ``criticloop.cli``: the ``criticloop`` command line.
- ``criticloop.tui``: the Textual reviewer app.
- ``criticloop.graphs``: the LangGraph feedback graph and the jobs that drive it;
  ``criticloop.training``: DPO/PPO/GRPO/RLOO and reward-model runners, the gate.
- ``criticloop.reward``: profiles, the weighted reward, critics' construction, reward models,
  the learned aggregator, calibration and drift.
- ``criticloop.agents``: the models (policy, embedder) and the critic agents.
- ``criticloop.store``: the SQLite database and the verbs over it.

``settings`` holds the one configuration object; ``errors`` the domain errors the CLI turns
into exit codes; ``vocab`` the shared names; ``progress`` the one progress bar.
"""

__version__ = "0.1.0"
