"""The student runtime: confidence scorers, cascades with escalation, threshold calibration.

    from distillery.routing import Cascade, StudentAgent, run_student, get_scorer

See docs/routing.md for the cascade config file, the scorers and how thresholds are calibrated.
"""

from distillery.routing.cascade import (
    Cascade,
    CascadeConfig,
    StudentAgent,
    Tier,
    TierConfig,
    load_cascade_config,
    run_student,
    write_cascade_config,
)
from distillery.routing.confidence import (
    AgreementScorer,
    ConfidenceScorer,
    LearnedScorer,
    LogprobScorer,
    NoActionLogprobs,
    RandomScorer,
    SchemaScorer,
    action_token_logprobs,
    get_scorer,
    invalid_reason,
    register_scorer,
    score_action,
)
from distillery.routing.config import config_warnings

__all__ = [
    "AgreementScorer",
    "Cascade",
    "CascadeConfig",
    "ConfidenceScorer",
    "LearnedScorer",
    "LogprobScorer",
    "NoActionLogprobs",
    "RandomScorer",
    "SchemaScorer",
    "StudentAgent",
    "Tier",
    "TierConfig",
    "action_token_logprobs",
    "config_warnings",
    "get_scorer",
    "invalid_reason",
    "load_cascade_config",
    "register_scorer",
    "run_student",
    "score_action",
    "write_cascade_config",
]
