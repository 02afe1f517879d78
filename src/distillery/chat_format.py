"""The Hermes/Qwen chat convention now lives in `distillery.formats.hermes`; this name stays so that
existing imports keep working. New code imports `distillery.formats.hermes`."""

from distillery.formats.hermes import (  # noqa: F401  (re-exported)
    EOS_TOKEN,
    HERMES_CHAT_TEMPLATE,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    arrow_message,
    parse_tool_calls,
    to_hf_message,
    to_hf_messages,
    to_hf_tools,
)
