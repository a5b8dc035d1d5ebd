"""SIGHUP from the first instruction of ``main``, before the event loop can handle it.

SIGHUP's default action ends the process, and the asyncio handler that turns it into a
reload exists only once the config is read and the loop runs: a reload sent in that
fraction of a second used to kill the bridge. ``HeldSighup()`` installs a handler that only
remembers the signal; ``ops.service`` takes it over and applies a remembered reload once
the bridge is ready (the config may have changed since it was read). This module imports
nothing slow, so it can run before the rest of the program is even imported.
"""

from __future__ import annotations

import signal
from types import FrameType


class HeldSighup:
    """Installed on creation; ``arrived`` says whether a SIGHUP came since."""

    def __init__(self) -> None:
        self.arrived = False
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self.arrived = True

    def release(self) -> None:
        """Back to the default action, for commands that should end on a hangup (chat)."""
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
