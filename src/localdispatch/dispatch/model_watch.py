"""Whether Aider workers' model server answers, so no attempt is spent against a dead one.

Aider retries an unreachable server for over a minute and then exits 0 having done nothing;
every attempt started while the server is down is wasted time and a retry used up for no
fault of the task. So the dispatcher asks here before it starts work, and again whenever an
attempt ends without a commit: while the server is down no attempt starts, the attempt that
ran into it is not counted, and the address and how to start the server are said once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RECHECK_SECS = 5.0


class ModelWatch:
    """The model server's state as the dispatcher last saw it. ``probe`` returns why the
    server cannot be used, or None when it answers (``workers.model_server_problem``)."""

    def __init__(
        self,
        probe: Callable[[], str | None],
        *,
        enabled: bool,
        recheck_secs: float = RECHECK_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.enabled = enabled
        self.recheck_secs = recheck_secs
        self._clock = clock
        self.down: str | None = None
        self._checked_at = -recheck_secs

    def check(self) -> str | None:
        """Ask the server now; returns (and remembers) why it is down, or None."""
        if not self.enabled:
            return None
        self._checked_at = self._clock()
        self.down = self._probe()
        if self.down:
            log.info("model server: %s", self.down)  # the dispatcher reports it, once
        return self.down

    def may_start(self) -> bool:
        """Whether attempts may start: the server answered when last asked. While it is
        down it is asked again every ``recheck_secs``, not at every tick."""
        if self.down is None:
            return True
        if self._clock() - self._checked_at >= self.recheck_secs:
            self.check()
        return self.down is None
