"""The process around the App: signals, systemd notify, watchdog, health gateway (SPEC §9).

SIGTERM/SIGINT stop gracefully; SIGHUP reloads (an invalid config keeps the old one). A
SIGHUP that arrives before the bridge is ready (even before this module is imported, see
``ops.early_signals``) is remembered and applied once ready: the config it asks for may be
newer than the one being started. The health gateway binds before any bot starts, so a
taken port fails the start before a single update is fetched.
READY=1 is sent once every bot polls; WATCHDOG=1 only while the event loop runs and every
bot's poller is alive — a stalled poller is restarted here, and if it stays stalled the
pings stop and systemd restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bot.app import App
from bot.channels.telegram import TelegramChannel
from bot.errors import ConfigError, ConfigProblem
from bot.ops.gateway import HealthGateway
from bot.ops.logs import RedactingFilter
from bot.ops.notify import SystemdNotifier

log = logging.getLogger(__name__)

SUPERVISE_EVERY_S = 10.0
READY_WITHIN_S = 120.0


async def serve(
    app: App,
    config_path: Path,
    *,
    notifier: SystemdNotifier,
    redactor: RedactingFilter,
    grace_s: float,
    early_reload: bool = False,
) -> None:
    """Runs until SIGTERM/SIGINT. ``early_reload``: a SIGHUP came before the loop ran."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload_wanted = asyncio.Event()
    ready = False

    def reload_requested() -> None:
        if not ready:
            log.info("reload requested before ready; applying it once ready")
        reload_wanted.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested)
    if early_reload:
        reload_requested()

    gateway = await _gateway(app)
    supervisor: asyncio.Task[None] | None = None
    try:
        await app.start()
    except BaseException:
        await gateway.stop()
        raise
    try:
        await _until_polling(app, stop)
        notifier.ready(app.status_line())
        log.info("persona-bridge ready: %s", app.status_line())
        ready = True
        # What start-up built (modules, config, clients) lives as long as the process: moved
        # out of the collector's sight, a full collection no longer walks ~70k objects
        # (~50-90 ms with the event loop stopped) every time it runs.
        gc.freeze()
        supervisor = asyncio.create_task(_supervise(app, notifier), name="supervisor")
        while not stop.is_set():
            await _first(stop.wait(), reload_wanted.wait())
            if reload_wanted.is_set() and not stop.is_set():
                reload_wanted.clear()
                notifier.reloading()
                if await app.reload(config_path):
                    redactor.add(app.secrets())
                notifier.ready(app.status_line())
    finally:
        notifier.stopping()
        log.info("stopping: finishing in-flight turns (up to %.0fs)", grace_s)
        if supervisor is not None:
            supervisor.cancel()
        await gateway.stop()
        await app.stop(grace_s)


async def _gateway(app: App) -> HealthGateway:
    """The health gateway, listening; a port it cannot bind is a configuration problem.

    Exit 78 rather than 69 for it: the port is taken by another program or not ours to
    bind, which a restart does not change, and systemd's ``RestartPreventExitStatus=78``
    then stops the restart loop until someone fixes gateway.port or frees the port.
    """
    settings = app.loaded.config.gateway
    gateway = HealthGateway(
        settings.host, settings.port, health=app.health, metrics=app.metrics_page
    )
    try:
        await gateway.start()
    except OSError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    "gateway.port",
                    f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc})",
                    "free the port or choose another gateway.port (0 picks a free one)",
                )
            ]
        ) from exc
    log.info("gateway listening on http://%s:%d", settings.host, gateway.port)
    return gateway


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    """Until the first of ``waits`` finishes; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _until_polling(app: App, stop: asyncio.Event) -> None:
    """READY means every bot is polling: wait for it (or give up waiting, and say so)."""
    deadline = time.monotonic() + READY_WITHIN_S
    while not all(app.polling().values()) and not stop.is_set():
        if time.monotonic() > deadline:
            log.warning("not every bot is polling after %.0fs: %s", READY_WITHIN_S, app.polling())
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.05)


async def _supervise(app: App, notifier: SystemdNotifier) -> None:
    interval = notifier.watchdog_interval() or SUPERVISE_EVERY_S
    while True:
        now = time.monotonic()
        healthy = True
        for channel in list(app.channels.values()):
            if isinstance(channel, TelegramChannel) and channel.stalled(now):
                healthy = False
                await channel.restart_polling()
        if healthy:
            notifier.watchdog()
        notifier.status(app.status_line())
        await asyncio.sleep(min(interval, SUPERVISE_EVERY_S))
