"""The built-in critics, one module each; importing this package registers them by name.

Every score is 0-1 with higher better for the reward; ``evidence`` holds the signals behind it.
"""

from . import (  # noqa: F401 - imported to register
    brand_voice,
    coherence,
    compliance,
    detectability,
    helpfulness,
    persona,
    reward_model,
    salience,
)
