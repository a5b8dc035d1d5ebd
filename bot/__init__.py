"""persona-bridge: several Telegram bots, each a persona bound to its own LLM agent."""

__version__ = "0.1.0"
