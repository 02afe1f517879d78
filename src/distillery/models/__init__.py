"""Models by URI: `anthropic:claude-opus-4-6`, `openai:gpt-4o-mini`, `hf:./path`, and the schemes worlds register.

`load_model(uri, **options)` picks the provider from the scheme before the colon. Providers are
imported lazily, so using one never requires the others' SDKs to import cleanly. A scheme that is
not a provider here is looked up among the model families a world registered (`distillery.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distillery import registry
from distillery.errors import ConfigError
from distillery.models.base import AsyncChatModel, ChatModel, SyncChatModel

# scheme -> "module:factory"; the factory is called as factory(name, **options).
_PROVIDERS: dict[str, str | Callable[..., ChatModel]] = {
    "anthropic": "distillery.models.anthropic:AnthropicModel",
    "openai": "distillery.models.openai:OpenAIModel",
    "hf": "distillery.models.hf:HFModel",
}


def register_provider(scheme: str, factory: str | Callable[..., ChatModel]) -> None:
    """Add a provider: `factory(name, **options)` must return a `ChatModel`."""
    _PROVIDERS[scheme] = factory


def split_uri(uri: str) -> tuple[str, str]:
    scheme, sep, name = uri.partition(":")
    if not sep or not name or (scheme not in _PROVIDERS and registry.model_family(scheme) is None):
        known = ", ".join(f"{s}:" for s in sorted({*_PROVIDERS, *registry.model_schemes()}))
        raise ConfigError(f"unknown model URI {uri!r}; expected one of {known} followed by a model name")
    return scheme, name


def load_model(uri: str, **options: Any) -> ChatModel:
    """Build the model a URI names. Raises a one-line `ConfigError` for an unknown scheme."""
    scheme, name = split_uri(uri)
    factory = _PROVIDERS[scheme] if scheme in _PROVIDERS else registry.model_family(scheme).load
    return registry.resolve(factory)(name, **options)


__all__ = ["AsyncChatModel", "ChatModel", "SyncChatModel", "load_model", "register_provider", "split_uri"]
