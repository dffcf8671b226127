"""The critics as a reward for training and as the judge of the promotion gate.

The same critics, profile weights and aggregation as the feedback graph: a response's reward is
the weighted mean of its critic scores, and a hard violation (veto) becomes ``veto_penalty``.
The coherence critic's likelihood signal comes from the *base* policy with no adapter, so the
model being trained or evaluated never grades itself.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..agents import Case, Critic, Signals, load_embedder, run_critic
from ..reward import Profiles, Reward, aggregate
from ..settings import Settings
from ..store import Store


class CriticJudge:
    """Scores responses to stored prompts; each (prompt, response) is judged once."""

    def __init__(
        self,
        settings: Settings,
        *,
        profiles: Profiles | None = None,
        critics: dict[str, Critic] | None = None,
        signals: Signals | None = None,
        veto_penalty: float = -1.0,
    ):
        from ..reward import build_critics

        self.settings = settings
        self.profiles = profiles or Profiles.load(settings.profiles)
        self.critics = (
            critics
            if critics is not None
            else build_critics(self.profiles, settings, lambda: self.signals().policy)
        )
        self.veto_penalty = veto_penalty
        self._signals = signals
        self._contexts: dict[str, tuple[dict, dict | None, dict | None]] = {}
        self._rewards: dict[tuple[str, str], Reward] = {}
        self._lock = threading.Lock()

    def signals(self) -> Signals:
        if self._signals is None:
            from ..agents import open_policy

            judge_policy = open_policy(self.settings)
            self._signals = Signals(load_embedder(self.settings), judge_policy)
        return self._signals

    def context(self, prompt_id: str) -> tuple[dict, dict | None, dict | None]:
        if prompt_id not in self._contexts:
            with Store.open(self.settings.db_path, create=False) as store:
                self._contexts[prompt_id] = store.prompt_context(prompt_id)
        return self._contexts[prompt_id]

    def weights(self, prompt_id: str) -> dict[str, float]:
        prompt, _, _ = self.context(prompt_id)
        return self.profiles.for_prompt(prompt["task_type"], prompt["brand_id"]).weights

    def rewards(self, prompt_id: str, responses: Sequence[str]) -> list[Reward]:
        """The reward of each response to the prompt (computed once per distinct text)."""
        with self._lock:
            todo = [r for r in dict.fromkeys(responses) if (prompt_id, r) not in self._rewards]
            if todo:
                context = self.context(prompt_id)
                cases = [Case.of(*context, r, "stop") for r in todo]
                signals = self.signals()
                signals.prepare(cases)
                weights = self.weights(prompt_id)
                for response, case in zip(todo, cases, strict=True):
                    scores = {}
                    for name, critic in self.critics.items():
                        if weights.get(name, 0) > 0 and critic.applies(case):
                            scores[name] = run_critic(critic, case, signals).as_dict()
                    self._rewards[(prompt_id, response)] = aggregate(response, scores, weights)
            return [self._rewards[(prompt_id, r)] for r in responses]

    def scalar(self, reward: Reward) -> float:
        """One number for RL: the aggregate, the veto penalty, or 0 when nothing could judge."""
        if reward.vetoed:
            return self.veto_penalty
        return 0.0 if reward.total is None else float(reward.total)


class ModelReward:
    """A reward model as the RL reward: P(preferred over a typical response), 0-1, the scale of
    the critics' weighted reward, so the two mix by plain weights. It reads the conversation the
    critics read (the stored turns)."""

    def __init__(self, spec: Any, judge: CriticJudge):
        from ..reward import RewardScorer, check_local

        check_local(spec)
        self.scorer = RewardScorer(spec)
        self.judge = judge

    @classmethod
    def named(cls, settings: Settings, name: str, judge: CriticJudge) -> ModelReward:
        """``name``: ``trained`` (the active trained model), a trained version, or a table of
        the profile's ``[reward_models]``."""
        from ..reward import reward_model_spec

        return cls(reward_model_spec(name, judge.profiles, settings, dimension="reward_model"), judge)

    @property
    def version(self) -> str:
        return self.scorer.version

    def rewards(self, prompt_id: str, responses: Sequence[str]) -> list[float]:
        prompt, _, _ = self.judge.context(prompt_id)
        conversation = [{"role": m["role"], "content": m["content"]} for m in prompt["messages"]]
        raws = self.scorer.score_many([(conversation, r) for r in responses])
        return [self.scorer.spec.to_unit(x) if r.strip() else 0.0 for x, r in zip(raws, responses, strict=True)]


def parse_reward(spec: str) -> tuple[float, str | None]:
    """``critics`` -> (0, None); ``rm:NAME`` -> (1, NAME); ``mix[:NAME]`` -> (mix, NAME or
    'trained'): the reward model's weight (the mix weight is applied by the caller) and name."""
    kind, _, name = spec.partition(":")
    if spec == "critics":
        return 0.0, None
    if kind == "rm":
        return 1.0, name
    return -1.0, name or "trained"
