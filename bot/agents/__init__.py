"""Agents: personas with their own model chains, and the turn that runs them."""
