"""What the HTTP providers share: one JSON POST per call on the dispatcher's shared pool."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import httpx

from bot.config.schema import ModelEntry
from bot.providers import http_errors
from bot.providers.base import Provider
from bot.types import JSONObject

CONNECT_TIMEOUT_S = 10.0


class HttpProvider(Provider):
    """Subclasses name their endpoint ``path`` and say how to build headers and bodies."""

    path: ClassVar[str]

    def __init__(self, entry: ModelEntry, client: httpx.AsyncClient) -> None:
        self._entry = entry
        self._client = client  # shared with every HTTP provider; the dispatcher closes it
        self._url = f"{entry.base_url}{self.path}"
        self._timeout = httpx.Timeout(
            entry.timeout_s, connect=min(CONNECT_TIMEOUT_S, entry.timeout_s)
        )

    @abstractmethod
    def _headers(self) -> dict[str, str]:
        """Authentication and protocol headers; the key never goes anywhere else."""

    async def _post_json(self, body: JSONObject) -> dict[str, Any]:
        """POST ``body``; the answer as a JSON object, or the translated ``ProviderError``."""
        name = self._entry.model_name
        try:
            response = await self._client.post(
                self._url, json=body, headers=self._headers(), timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise http_errors.from_transport_error(exc, name) from exc
        if response.status_code != 200:
            raise http_errors.from_response(response, name)
        return http_errors.parse_json(response, name)
