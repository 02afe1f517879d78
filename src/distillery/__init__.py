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
]
