"""Wake-ups for live followers when a job gets new records or a new status.

Log collection runs in threads; followers are coroutines on the server's loop.
A per-job version counter lets a follower wait for "anything newer than what I
saw" without missing a notification that lands between its read and its wait.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class JobEvents:
    """Thread-safe change notifications, one counter per job."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def version(self, training_id: str) -> int:
        return self._versions[training_id]

    def notify(self, training_id: str) -> None:
        """Signal a change; callable from any thread."""
        if self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._bump(training_id)
        else:
            self._loop.call_soon_threadsafe(self._bump, training_id)

    def _bump(self, training_id: str) -> None:
        self._versions[training_id] += 1
        for waiter in self._waiters.pop(training_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, training_id: str, seen: int, timeout: float) -> None:
        """Return once the job's version passes ``seen``, or after ``timeout``."""
        if self._versions[training_id] != seen:
            return
        waiter = self._loop.create_future()
        self._waiters[training_id].add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(training_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[training_id]
