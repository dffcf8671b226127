"""The fixed vocabularies shared by the database schema, the import records and the CLI.

Dependency-free so the CLI can offer them as choices without importing the store.
"""

TASK_TYPES = (
    "ad_insertion",
    "retail_media_budget",
    "creative",
    "persona_chat",
    "feedback_conversation",
    "general",
)
PAIR_SOURCES = ("synthetic", "human", "revision", "human-revision", "log-revision")
"""Where a pair came from: the critics, a person's A/B choice, a critic-guided revision the critics
scored higher, a person's rewrite of a candidate (chosen) against the candidates, or a revision of
an answer users rated down in a production log (chosen) against that answer."""
REVIEW_KINDS = ("preference", "stars", "thumbs", "comment", "rewrite")
REVIEW_SOURCES = ("reviewer", "import", "log")
"""Who gave a review: a person in the reviewer app, a labelled-pairs file (``labels import``), or
a user of the production system whose rating came in a feedback log (``feedback import``)."""
VERDICT_KINDS = ("preference", "rewrite")
"""The review kinds that decide an escalated case; stars, thumbs and comments annotate it."""
OUTCOMES = ("pair", "revision", "escalated", "human", "dropped")
"""What the feedback graph decided for a prompt: a synthetic pair, a pair from a revision, waiting
for a person, decided by a person, or dropped (with the reason recorded)."""
TRAIN_METHODS = ("dpo", "sft", "kto", "ppo", "grpo", "rloo", "reward")
"""How ``criticloop train`` learns: DPO from pairs, SFT from good answers, KTO from rated answers,
or PPO/GRPO/RLOO with the critics as reward (or a reward model on people's decisions)."""
JOB_STATUSES = ("running", "done", "failed")
ADAPTER_STATUSES = ("candidate", "promoted", "retired", "rejected")
"""A trained adapter waits for the gate (candidate), serves generation (promoted), was replaced
or rolled back (retired), or lost to the adapter in service (rejected)."""
