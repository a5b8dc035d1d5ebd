"""Running as a service: logging, health, notify."""
