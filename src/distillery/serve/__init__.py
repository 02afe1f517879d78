"""The gateway: OpenAI- and Anthropic-compatible HTTP over a cascade (`distillery serve`).

    from distillery.serve import CascadeBackend, GatewaySettings, create_app

    app = create_app(CascadeBackend.from_config("cascade.toml"), GatewaySettings(store=SQLiteStore()))

See docs/serving.md.
"""

from distillery.serve.app import GatewaySettings, create_app
from distillery.serve.backend import Backend, CascadeBackend, FixedBackend, GatewayError, RoutedTurn, StepOptions
from distillery.serve.capture import CaptureWriter, Exchange, exchange_trajectory

__all__ = [
    "Backend",
    "CaptureWriter",
    "CascadeBackend",
    "Exchange",
    "FixedBackend",
    "GatewayError",
    "GatewaySettings",
    "RoutedTurn",
    "StepOptions",
    "create_app",
    "exchange_trajectory",
]
