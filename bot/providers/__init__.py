"""Model access: the Provider seam, one module per protocol, the dispatcher."""
