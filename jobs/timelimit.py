"""Per-item time limits: stop one attempt that runs too long, leaving its process alive.

A watchdog thread in each worker process looks every WATCHDOG_INTERVAL seconds at the
deadline the main thread armed, and once it has passed sends SIGUSR2 to the main thread
(django-q2 keeps SIGALRM for its task timeout). The handler raises ItemTimeout there: in
pure Python at the next bytecode, in a blocking call (socket, sleep, select) as soon as
the call is interrupted. A C extension that holds the interpreter for a long time without
checking for signals is only stopped when it returns, or by the task's own timeout.

Arming and disarming are two attribute stores, so a limit costs nothing measurable on
items that take microseconds.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL = 0.05
SIGNAL = signal.SIGUSR2
# Bound once, so code that replaces time.sleep or time.monotonic (a test, a job type)
# never runs in, or misleads, the watchdog.
_monotonic = time.monotonic
_idle = threading.Event()


class ItemTimeout(BaseException):
    """An attempt ran past its time limit.

    A BaseException, so a job type's own `except Exception` cannot swallow it.
    """


class _State:
    """What the watchdog and the signal handler share with the main thread."""

    def __init__(self) -> None:
        # (token, deadline in time.monotonic() seconds) while an attempt runs, else None.
        self.armed: tuple[int, float] | None = None
        self.token = 0
        # The token the watchdog sent a signal for; the handler raises only for that one.
        self.fired = -1
        self.watchdog: threading.Thread | None = None
        self.pid = 0
        self.thread = 0


_state = _State()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    armed = _state.armed
    if armed is not None and armed[0] == _state.fired:
        _state.armed = None
        raise ItemTimeout


def _watch(target: int) -> None:
    while True:
        _idle.wait(WATCHDOG_INTERVAL)
        armed = _state.armed
        if armed is not None and armed[0] != _state.fired and _monotonic() >= armed[1]:
            _state.fired = armed[0]
            try:
                signal.pthread_kill(target, SIGNAL)
            except (ProcessLookupError, OSError):  # the main thread is gone: nothing to stop
                return


def _ready() -> bool:
    """Install the handler and start this process's watchdog; False where that can't be done."""
    if _state.pid == os.getpid() and _state.thread == threading.get_ident():
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(SIGNAL) is not _on_signal:
        signal.signal(SIGNAL, _on_signal)
    if _state.pid != os.getpid() or _state.watchdog is None or not _state.watchdog.is_alive():
        # A forked worker inherits the state but not the thread.
        _state.pid = os.getpid()
        _state.thread = threading.get_ident()
        _state.armed = None
        _state.watchdog = threading.Thread(
            target=_watch, args=(threading.get_ident(),), name="item-time-limit", daemon=True
        )
        _state.watchdog.start()
    return True


class time_limit:
    """Raise ItemTimeout in the block if it runs longer than `seconds`.

    Outside a process's main thread (where signals cannot be handled) the block runs
    without a limit, and that is logged once.
    """

    _warned = False

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self) -> time_limit:
        if not _ready():
            if not time_limit._warned:
                time_limit._warned = True
                logger.warning("item time limits need the main thread; running without them")
            return self
        _state.token += 1
        _state.armed = (_state.token, _monotonic() + self.seconds)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _state.armed = None
