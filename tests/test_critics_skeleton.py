"""The skeleton every built-in critic is built on (agents/_critic.py: BaseCritic), without models.

The built-in critics' own judging is tested over the bundled models in test_critics.py and
test_helpfulness.py; here only what they share: identity, when they apply, the unscored early
returns and their reasons, rounding and the truncation evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from criticloop.agents import CRITICS, MAX_JUDGED_CHARS, BaseCritic, Case, Score, build_critic
from criticloop.agents._critic import truncation


def case(response: str = "An answer.", **fields) -> Case:
    return Case(
        prompt_id="p1",
        task_type="general",
        conversation=(("user", "A question?"),),
        response=response,
        **fields,
    )


@dataclass(frozen=True)
class Echo(BaseCritic, name="echo", version="7", needs=("campaign", "persona")):
    weight: float = 0.123456

    def judge(self, case: Case, text: str, signals) -> Score:
        return self.scored(self.weight, 0.56789, f"judged {text!r}", {**truncation(case)})


def test_built_in_critics_keep_their_names_dimensions_and_versions():
    from criticloop.agents import critics  # noqa: F401 - registers them

    # Versions are recorded with every score and calibrations are keyed on them.
    identities = {
        "coherence": ("coherence", "coherence", "1"),
        "helpfulness": ("helpfulness", "helpfulness", "1"),
        "salience": ("salience", "salience", "1"),
        "detectability": ("detectability", "detectability", "1"),
        "compliance": ("compliance", "compliance", "1"),
        "brand_voice": ("brand_voice", "brand_voice", "1"),
        "persona": ("persona", "persona_consistency", "1"),
        "reward_model": ("reward_model", "reward_model", "unresolved"),
    }
    found = {n: (CRITICS[n].name, CRITICS[n].dimension, CRITICS[n].version) for n in identities}
    assert found == identities


def test_built_in_critics_declare_what_cases_they_need():
    from criticloop.agents import critics  # noqa: F401 - registers them

    needs = {
        "coherence": (),
        "helpfulness": (),
        "salience": ("campaign",),
        "detectability": ("campaign",),
        "compliance": (),
        "brand_voice": ("brand",),
        "persona": ("persona",),
        "reward_model": (),
    }
    assert {n: CRITICS[n].needs for n in needs} == needs


def test_the_skeleton_returns_unscored_with_its_reasons_in_order():
    echo = Echo()
    full = {"campaign": {"product": "P"}, "persona": "You are Mara."}
    assert (echo.name, echo.dimension, echo.version) == ("echo", "echo", "7")
    unscored = {
        "empty response": case("  \n ", **full),  # before anything the case lacks
        "no campaign attached": case(persona="You are Mara.", campaign={}),
        "no persona given": case(campaign={"product": "P"}, persona="   "),
    }
    for reason, judged in unscored.items():
        assert echo(judged, None) == Score("echo", None, None, reason, "7", {})
        assert not echo.applies(judged) or reason == "empty response"
    assert echo.applies(case(**full))
    assert echo(case(**full), None) == Score("echo", 0.1235, 0.5679, "judged 'An answer.'", "7")


def test_the_skeleton_reports_truncation():
    long = case("x" * (MAX_JUDGED_CHARS + 5), campaign={"product": "P"}, persona="You are Mara.")
    assert Echo()(long, None).evidence == {
        "truncated": True,
        "judged_chars": MAX_JUDGED_CHARS,
        "response_chars": MAX_JUDGED_CHARS + 5,
    }
    assert truncation(long, flag=False) == {
        "judged_chars": MAX_JUDGED_CHARS,
        "response_chars": MAX_JUDGED_CHARS + 5,
    }
    assert truncation(case()) == {}


def test_a_critic_must_declare_what_it_is():
    with pytest.raises(TypeError, match="version"):

        class NoVersion(BaseCritic, name="x"):
            pass

    with pytest.raises(ValueError, match="unknown case parts"):

        class Unknown(BaseCritic, name="x", version="1", needs=("weather",)):
            pass

    class Named(BaseCritic, name="x", dimension="x_score", version="1"):
        pass

    assert (Named.name, Named.dimension, Named.version, Named.needs) == ("x", "x_score", "1", ())


def test_options_are_the_critic_fields_only():
    with pytest.raises(TypeError):
        build_critic("coherence", version="2")
    with pytest.raises(TypeError):
        build_critic("reward_model", backend="crew")
    assert build_critic("coherence", nll_midpoint=4.0).nll_midpoint == 4.0


def test_the_unresolved_reward_model_never_judges():
    critic = build_critic("reward_model", model="skywork")
    reason = "no reward model loaded (set options.reward_model.model in the profile)"
    for judged in (case(), case("")):
        assert critic.applies(judged)
        assert critic(judged, None) == Score("reward_model", None, None, reason, "unresolved")
