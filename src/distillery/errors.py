"""Errors a user can act on.

Every error raised for bad input or a broken environment is a `DistilleryError` whose message is
one line that names the problem (the file and line, the field, the environment variable). The CLI
prints that line and exits non-zero, without a traceback.
"""


class DistilleryError(Exception):
    """A problem the user can fix; its message is one actionable line."""


class ConfigError(DistilleryError):
    """Bad configuration: unknown model URI, bad threshold, invalid schema, unwritable path."""


class MissingAPIKeyError(ConfigError):
    """A hosted provider was chosen but its API key environment variable is empty."""

    def __init__(self, provider: str, env_var: str):
        super().__init__(f"{provider}: no API key; set the {env_var} environment variable")
        self.env_var = env_var


class ModelError(DistilleryError):
    """A model call failed for good (bad request, authentication, refusal to continue)."""


class TransientModelError(ModelError):
    """A model call failed in a way that is worth retrying: 429, 529, 5xx, timeouts, connection errors.

    `retry_after` is the server's hint in seconds, when it gave one.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class BudgetExceeded(DistilleryError):
    """The next call would spend past the configured budget."""
