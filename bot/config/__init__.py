"""Configuration: the schema (``schema``), the loader (``loader``) and its checks."""

from bot.config.loader import LoadedConfig, load_config, resolve_path
from bot.config.schema import BridgeConfig

__all__ = ["BridgeConfig", "LoadedConfig", "load_config", "resolve_path"]
