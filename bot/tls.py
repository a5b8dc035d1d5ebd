"""One TLS client context per process, shared by every outgoing HTTP client.

Building a context loads the CA bundle (~35 ms and ~0.8 MiB each); with two Telegram
clients per bot and a model pool per config generation that was most of a bot's start-up
cost. A context holds no per-connection state, so sharing it is safe.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """httpx's own default (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), built once."""
    return httpx.create_ssl_context()
