"""The student at run time: confidence scorers, cascades with escalation, the cascade config file.

    from distillery.routing import Cascade, StudentAgent, run_student, get_scorer

What the gateway (`distillery.serve`) imports, and nothing offline: choosing thresholds, certifying
them, evaluating a cascade and training one live in `distillery.evaluation`. When a step escalates is
decided in one place, `routing/decision.py`. See docs/routing.md.
"""

from distillery.routing.cascade import Cascade, StepOverrides, StudentAgent, Tier, run_student
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
from distillery.routing.config import (
    CascadeConfig,
    TierConfig,
    config_warnings,
    load_cascade_config,
    write_cascade_config,
)
from distillery.routing.decision import should_escalate

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
    "StepOverrides",
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
    "should_escalate",
    "write_cascade_config",
]
