"""Store: the criticloop SQLite database and the verbs over it.

One file in the data home, WAL mode, ordered named migrations, writers in ``BEGIN IMMEDIATE``,
natural keys so reruns never duplicate. Callers use these verbs, never SQL::

    with Store.open(settings.db_path) as store:
        store.import_records(read_records(Path("prompts.jsonl")))
        store.record_generations([...])
"""

from ..vocab import PAIR_SOURCES, REVIEW_KINDS, TASK_TYPES, VERDICT_KINDS
from ._common import now
from ._feedback import (
    LOG_MODEL,
    NEGATIVE_STARS,
    REVISE_MODES,
    FeedbackLog,
    LoggedRating,
    read_feedback_log,
)
from ._files import ExportReport, read_records, write_preference_jsonl, write_sft_jsonl
from ._labels import (
    LABEL_FORMATS,
    LabelledPair,
    LabelledPairs,
    check_dataset,
    default_dataset,
    majority_label,
    read_labelled_pairs,
)
from ._locks import run_lock
from ._records import Brand, BrandVoice, Campaign, CompliancePolicy, Message, Prompt, content_hash
from ._review import ALL_CASES, CaseFilter, critic_agreement, reviewer_agreement
from ._store import (
    SUPPLIED,
    CritiqueRecord,
    DecisionRecord,
    GenerationRecord,
    ImportSummary,
    PairRecord,
    ReviewRecord,
    Store,
)
from ._traces import FEEDBACK_KEYS, CriticCall
from .demo import DEMO_FEEDBACK, DEMO_FILES

__all__ = [
    "now",
    "ALL_CASES",
    "SUPPLIED",
    "DecisionRecord",
    "DEMO_FEEDBACK",
    "DEMO_FILES",
    "FeedbackLog",
    "LoggedRating",
    "read_feedback_log",
    "LOG_MODEL",
    "NEGATIVE_STARS",
    "REVISE_MODES",
    "PAIR_SOURCES",
    "REVIEW_KINDS",
    "TASK_TYPES",
    "VERDICT_KINDS",
    "Brand",
    "BrandVoice",
    "Campaign",
    "CaseFilter",
    "CompliancePolicy",
    "CritiqueRecord",
    "CriticCall",
    "FEEDBACK_KEYS",
    "LABEL_FORMATS",
    "LabelledPair",
    "LabelledPairs",
    "ExportReport",
    "GenerationRecord",
    "ImportSummary",
    "Message",
    "PairRecord",
    "Prompt",
    "ReviewRecord",
    "Store",
    "check_dataset",
    "content_hash",
    "default_dataset",
    "majority_label",
    "read_labelled_pairs",
    "critic_agreement",
    "reviewer_agreement",
    "run_lock",
    "read_records",
    "write_preference_jsonl",
    "write_sft_jsonl",
]
