"""The demo data shipped with criticloop: 3 brands with campaigns, and ~40 prompts.

Written for this project (no third-party text). ``criticloop init`` loads them.
"""

from pathlib import Path

_HERE = Path(__file__).parent
DEMO_FILES = (_HERE / "brands.yaml", _HERE / "prompts.jsonl")
DEMO_FEEDBACK = _HERE / "feedback.jsonl"
"""About 30 rated conversations across the demo brands, for ``criticloop feedback import``
(not loaded by ``init``)."""
