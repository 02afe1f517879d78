"""Who may call the gateway, and where it may listen.

Keys come from `--api-key` (repeatable) or `DISTILLERY_API_KEY` (comma-separated). A client sends
one as `Authorization: Bearer <key>` (what the OpenAI SDK sends) or `x-api-key: <key>` (what the
Anthropic SDK sends). Without keys the gateway refuses to listen on anything but loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping

from distillery.errors import ConfigError

API_KEY_ENV = "DISTILLERY_API_KEY"


def keys_from(cli_keys: Iterable[str] = (), env: Mapping[str, str] | None = None) -> list[str]:
    """The configured keys: the CLI's, else the environment variable's (comma-separated)."""
    keys = [k.strip() for k in cli_keys if k and k.strip()]
    if not keys:
        raw = (os.environ if env is None else env).get(API_KEY_ENV, "")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost may resolve anywhere


def check_bind(host: str, keys: list[str], *, allow_unauthenticated: bool = False) -> None:
    """Refuse to expose an unauthenticated gateway beyond this machine, unless told to (behind an
    authenticating proxy)."""
    if not keys and not is_loopback(host) and not allow_unauthenticated:
        raise ConfigError(
            f"--host {host} is reachable from other machines; set an API key with --api-key or "
            f"{API_KEY_ENV}, listen on 127.0.0.1, or pass --allow-unauthenticated when a proxy in front authenticates"
        )


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("x-api-key")


def is_authorized(headers: Mapping[str, str], keys: list[str]) -> bool:
    if not keys:
        return True
    given = presented_key(headers)
    if not given:
        return False
    # Compare against every key in constant time, so timing says nothing about which nearly matched.
    matches = [hmac.compare_digest(given.encode(), key.encode()) for key in keys]
    return any(matches)
