"""Stop a worker process cleanly when its cluster stops.

SIGTERM or SIGINT to `manage.py qcluster` makes django-q2's sentinel stop taking tasks and
wait for each worker to end the task in hand: for a chunk task, which goes on to further
chunks, that could be many minutes. So the sentinel, as it begins to stop, sends each of
its workers SIGUSR1 (SIGNAL). A worker takes it as "stop soon": it finishes the item in hand, writes
its slice, gives its chunk back queued with the lease cleared and sends the chunk's task
again, so a live cluster takes the rest at once; it claims no further chunk, and passes
on the chunk tasks it is still handed.

Not SIGTERM: django-q2 ends a worker that overran its task timeout with it. Not SIGINT:
workers ignore it, as their sentinel does, so a terminal's Ctrl-C, which reaches the
whole process group, interrupts no item (the cluster's main process stops the cluster),
and programs a job type runs (openssl) inherit that and are not cut short either.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
from types import FrameType
from typing import Any

SIGNAL = signal.SIGUSR1

_requested = False


def requested() -> bool:
    """Return True once this worker process was asked to stop; cheap enough for every item."""
    return _requested


def request() -> None:
    """Ask this worker process to stop after the item in hand."""
    global _requested
    _requested = True


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Only a flag: the item in hand runs on undisturbed (an interrupted sleep or socket
    # read is resumed, PEP 475).
    request()


def worker_prepare(**kwargs: Any) -> None:
    """Take SIGNAL as a request to stop and ignore SIGINT, in a django-q2 worker process.

    Connected to django-q2's post_spawn, which it also sends where it runs a task inline
    (sync mode: tests, or any process, in any thread): there nothing changes.
    """
    if multiprocessing.parent_process() is None:
        return  # not a process a cluster's sentinel started
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(SIGNAL, _on_signal)


def workers_tell(processes: list[Any]) -> None:
    """Send each worker process its request to stop; never raise.

    One not yet prepared would die of it (SIGUSR1's default), holding no task: the first
    thing a worker does is send post_spawn, and the sentinel stops after its guard loop,
    which spawned the last of them at least a guard cycle before.
    """
    for process in list(processes):
        # Gone already, or never started (no pid).
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(process.pid, SIGNAL)


def install() -> None:
    """Prepare django-q2 clusters of this process to stop their workers cleanly.

    Connects worker_prepare to django-q2's post_spawn, and makes the sentinel tell its
    workers before it stops: django-q2 has no stop signal of its own, so Sentinel.stop
    is wrapped. Called from AppConfig.ready, before `qcluster` forks its sentinel.
    """
    from django_q.cluster import Sentinel
    from django_q.signals import post_spawn

    post_spawn.connect(worker_prepare, dispatch_uid="batchsite-worker-prepare")
    stop = Sentinel.stop
    if getattr(stop, "tells_workers", False):
        return

    @functools.wraps(stop)
    def stop_telling_workers(self: Sentinel) -> None:
        workers_tell(self.pool)
        stop(self)

    stop_telling_workers.tells_workers = True  # type: ignore[attr-defined]
    Sentinel.stop = stop_telling_workers
