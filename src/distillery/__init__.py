"""distillery: distil tool-using agents from a large teacher into small students.

The pipeline: collect teacher trajectories -> build fine-tuning data -> train a student with
knowledge-distillation losses -> serve the student with escalation to the teacher.
"""

from distillery.errors import DistilleryError
from distillery.trajectory import (
    DistillationSample,
    Message,
    Outcome,
    Step,
    ToolCall,
    ToolResult,
    ToolSpec,
    Trajectory,
    Turn,
    Usage,
)

__version__ = "0.1.0"

# The seed article's names, importable from the package. Loaded on first use, so that
# `import distillery` (and `distillery --help`) never pays for torch and TRL.
_LAZY = {
    "collect_teacher_trajectories": "distillery.collect",
    "TeacherCollector": "distillery.collect",
    "build_finetune_jsonl": "distillery.dataset.builder",
    "DatasetBuilder": "distillery.dataset.builder",
    "train_student": "distillery.distill.trainer",
    "Cascade": "distillery.routing.cascade",
    "StudentAgent": "distillery.routing.cascade",
    "run_student": "distillery.routing.cascade",
    "load_model": "distillery.models",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distillery' has no attribute {name!r}")

__all__ = [
    "DistilleryError",
    "DistillationSample",
    "Message",
    "Outcome",
    "Step",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Trajectory",
    "Turn",
    "Usage",
    "__version__",
    *_LAZY,
]
