"""API keys never reach stored trajectories or logs: `redact_secrets` and `RedactingFilter`."""

from __future__ import annotations

import logging
import os
import re

_SECRET_ENV = re.compile(r"(_API_KEY|_AUTH_TOKEN|_SECRET|_TOKEN)$")


def redact_secrets(text: str) -> str:
    """Replace the value of any API-key-like environment variable found in `text` with "[redacted]".

    Provider error messages sometimes echo the key they were given; those messages end up in
    stored trajectories and logs, which must never hold a key.
    """
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _SECRET_ENV.search(name) and value in text:
            text = text.replace(value, "[redacted]")
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts API keys from every record it passes (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
