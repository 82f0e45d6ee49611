"""Tell the workers running a batch, at once, that it must stop or pause.

Each batch has a nudge file on this host (`<data dir>/run/nudges/<batch id>`). Whoever
stops, cancels or pauses a batch appends a byte to it while still holding the batch's row
lock; a worker holds the file open and looks at its size before every item (one lseek to
its end, a fraction of a microsecond) and, when it grew, reads the batch under the row
lock, which waits for the nudging transaction to commit. So a worker on the same host
starts at most the one item it was already starting. Workers on other hosts see no file:
they read the batch from the database every POLL_SECONDS instead, and that read catches
everything a nudge would.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1


def nudge_path(batch_id: uuid.UUID | str) -> Path:
    """Return the batch's nudge file on this host."""
    return Path(settings.BATCHSITE_DATA_DIR) / "run" / "nudges" / str(batch_id)


def batch_nudge(batch_id: uuid.UUID | str) -> None:
    """Make every worker of the batch on this host look at the batch before its next item.

    Call it while holding the batch's row lock, before the change commits. Never raises: a
    nudge that can't be written only leaves the workers to their regular poll.
    """
    path = nudge_path(batch_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
    except OSError:
        logger.warning("could not nudge the workers of batch %s", batch_id, exc_info=True)


def nudges_clear(batch_id: uuid.UUID | str) -> None:
    """Remove the batch's nudge file; for a batch that ended or was deleted.

    Only when no worker runs the batch: one that holds the file open would not see a
    nudge written to a new one (its poll still would).
    """
    nudge_path(batch_id).unlink(missing_ok=True)


class BatchWatch:
    """Say, cheaply and before every item, whether a worker must look at its batch again.

    Holds the nudge file open (creating it), so a look is one lseek to its end. Call close()
    when done.
    """

    def __init__(self, batch_id: uuid.UUID | str) -> None:
        path = nudge_path(batch_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            logger.warning("no nudge file for batch %s; polling only", batch_id, exc_info=True)
            self.fd = None
        self.seen = self._size()
        self.next_poll = time.monotonic() + POLL_SECONDS

    def _size(self) -> int:
        if self.fd is None:
            return 0
        # The file's size, as fstat would say, at a quarter of its cost: this runs per item.
        return os.lseek(self.fd, 0, os.SEEK_END)

    def due(self) -> str:
        """Return "nudged" if the batch was nudged, "poll" if a poll is due, else ""."""
        size = self._size()
        if size != self.seen:
            self.seen = size
            self.next_poll = time.monotonic() + POLL_SECONDS
            return "nudged"
        now = time.monotonic()
        if now >= self.next_poll:
            self.next_poll = now + POLL_SECONDS
            return "poll"
        return ""

    def close(self) -> None:
        """Let go of the nudge file."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
