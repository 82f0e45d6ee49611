"""How much of the workers' database time goes to waiting for locks (PostgreSQL only).

A thread samples `pg_stat_activity` every 20 ms while a batch is processed. The backends it
counts are every client connection to the benchmark's throw-away database except its own and
the benchmark's: the qclusters' connections (workers, and their sentinel and monitor).

- `lock_wait_share`: lock-waiting samples / all samples of those backends, idle ones
  included: the share of worker connection time spent waiting for a lock.
- `lock_wait_share_of_active`: lock-waiting samples / samples in state `active`: the share
  of the time the workers' queries ran that they spent waiting for a lock.

"Waiting for a lock" is `wait_event_type = 'Lock'`: heavyweight locks such as row, tuple and
transaction-id locks (not lightweight locks or I/O). A share is None when no sample saw such
a backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

SAMPLE_SQL = """
    SELECT count(*),
           count(*) FILTER (WHERE state = 'active'),
           count(*) FILTER (WHERE wait_event_type = 'Lock')
      FROM pg_stat_activity
     WHERE datname = current_database()
       AND backend_type = 'client backend'
       AND pid <> pg_backend_pid()
       AND pid <> ALL(%s)
"""


class LockWaitSampler:
    """Sample the database's other backends, and how many wait for a lock, from a thread."""

    def __init__(self, *, interval: float = 0.02, exclude_pids: Iterable[int] = ()) -> None:
        self.interval = interval
        self.exclude_pids = list(exclude_pids)
        self.samples = 0
        self.backend_samples = 0
        self.active_samples = 0
        self.waiting_samples = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> LockWaitSampler:
        """Start sampling; the calling thread's own connection is not counted."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.exclude_pids.append(cursor.fetchone()[0])
        self._thread = threading.Thread(target=self._run, name="lock-wait-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread; raise what went wrong in it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def figures(self) -> dict[str, float | None]:
        """Return the two shares (see the module docstring)."""
        waiting = self.waiting_samples
        return {
            "lock_wait_share": waiting / self.backend_samples if self.backend_samples else None,
            "lock_wait_share_of_active": (
                waiting / self.active_samples if self.active_samples else None
            ),
        }

    def _run(self) -> None:
        # Django's connections are per thread: this one is the sampler's own.
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                while True:
                    # Autocommit: each sample is its own transaction, so a fresh snapshot
                    # of pg_stat_activity (it is cached for the length of a transaction).
                    cursor.execute(SAMPLE_SQL, [self.exclude_pids])
                    backends, active, waiting = cursor.fetchone()
                    self.samples += 1
                    self.backend_samples += backends
                    self.active_samples += active
                    self.waiting_samples += waiting
                    if self._stopping.wait(self.interval):
                        break
        except BaseException as exc:
            self._error = exc
        finally:
            connection.close()


@contextmanager
def lock_waits_sampled() -> Iterator[dict[str, float | None]]:
    """Sample lock waits for the block; the yielded dict gets the shares on PostgreSQL only."""
    from django.db import connection

    figures: dict[str, float | None] = {}
    if connection.vendor != "postgresql":
        yield figures
        return
    sampler = LockWaitSampler().start()
    try:
        yield figures
    finally:
        sampler.stop()
    figures.update(sampler.figures())
