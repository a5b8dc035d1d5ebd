"""``models check``: one tiny request through every model_list entry, timed.

What it prints (error text, the start of each answer) is redacted: a server may quote the key.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bot.config.schema import ModelEntry
from bot.errors import ProviderError
from bot.providers.dispatcher import ProviderDispatcher
from bot.redaction import Redactor
from bot.types import ChatMessage, ChatRequest

PROBE = ChatRequest(
    system="You are a health check.",
    messages=(ChatMessage("user", "Reply with the single word OK."),),
    max_tokens=16,
)


@dataclass(frozen=True)
class ProbeResult:
    entry: ModelEntry
    ok: bool
    seconds: float
    detail: str


async def probe_all(
    dispatcher: ProviderDispatcher, entries: list[ModelEntry], redactor: Redactor | None = None
) -> list[ProbeResult]:
    """Probe every entry at once; each directly, not through a chain, so none hides another.

    Without a ``redactor``, one is made from the entries' keys (all a provider could quote).
    """
    if redactor is None:
        redactor = Redactor(e.api_key.get_secret_value() for e in entries if e.api_key)
    return list(await asyncio.gather(*(_probe(dispatcher, e, redactor) for e in entries)))


async def _probe(
    dispatcher: ProviderDispatcher, entry: ModelEntry, redactor: Redactor
) -> ProbeResult:
    started = time.perf_counter()
    try:
        provider = await dispatcher.get(entry.model_name)
        response = await provider.chat(PROBE)
    except ProviderError as exc:
        detail = redactor.redact(f"{type(exc).__name__}: {exc}")
        return ProbeResult(entry, False, time.perf_counter() - started, detail)
    reply = " ".join(redactor.redact(response.text).split())[:40]
    return ProbeResult(entry, True, time.perf_counter() - started, f"answered {reply!r}")


def render(results: list[ProbeResult]) -> str:
    rows = [("model_name", "model", "ok", "latency", "detail")]
    rows += [
        (
            r.entry.model_name,
            r.entry.model,
            "ok" if r.ok else "FAIL",
            f"{r.seconds * 1000:.0f} ms",
            r.detail[:100],
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
