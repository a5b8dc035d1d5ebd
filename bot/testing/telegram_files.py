"""Files for the fake Bot API: what injected photos, voice notes and documents carry, served
by ``getFile`` and ``GET /file/bot<token>/<path>`` as Telegram serves them, with a record
of every download (how many bytes went out, whether the client took them all)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024


@dataclass(frozen=True)
class FileDownload:
    token: str
    file_id: str
    size: int
    sent: int  # bytes written before the client stopped reading (or all of them)
    complete: bool


@dataclass
class _File:
    token: str
    file_id: str
    path: str
    data: bytes = field(repr=False)
    declared: int | None


class FileShelf:
    """Files by ``file_id``, per bot token (another bot's token cannot fetch them)."""

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}
        self._by_path: dict[tuple[str, str], _File] = {}
        self._ids = itertools.count(1)
        self.downloads: list[FileDownload] = []

    def put(
        self, token: str, data: bytes, suffix: str, *, declared: int | bool | None = True
    ) -> dict[str, Any]:
        """Store ``data``; the fields a message's media object carries. ``declared``: True
        tells the real size, None omits it, a number lies about it."""
        n = next(self._ids)
        file_id, folder = f"file-{n}-{'x' * 20}", "photos" if suffix == ".jpg" else "documents"
        if declared is True:
            size: int | None = len(data)
        else:
            size = None if declared is None or declared is False else declared
        stored = _File(token, file_id, f"{folder}/file_{n}{suffix}", data, size)
        self._files[file_id] = stored
        self._by_path[(token, stored.path)] = stored
        fields: dict[str, Any] = {"file_id": file_id, "file_unique_id": f"u{n}"}
        if size is not None:
            fields["file_size"] = size
        return fields

    def get_file(self, token: str, file_id: str) -> dict[str, Any] | None:
        stored = self._files.get(file_id)
        if stored is None or stored.token != token:
            return None
        result: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_path": stored.path,
        }
        if stored.declared is not None:
            result["file_size"] = stored.declared
        return result

    def downloads_for(self, token: str) -> list[FileDownload]:
        return [d for d in self.downloads if d.token == token]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        token, path = request.match_info["token"], request.match_info["path"]
        stored = self._by_path.get((token, path))
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)  # chunked: the client learns the size only by reading
        sent, complete = 0, False
        try:
            for start in range(0, len(stored.data), CHUNK):
                chunk = stored.data[start : start + CHUNK]
                await response.write(chunk)
                sent += len(chunk)
                await asyncio.sleep(0.001)  # paced like a network: a client can hang up
            await response.write_eof()
            complete = True
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.downloads.append(
                FileDownload(token, stored.file_id, len(stored.data), sent, complete)
            )
        return response
