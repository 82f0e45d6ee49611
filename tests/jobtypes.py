"""Job types that exist only for tests."""

import hashlib
import os
import socket
import time

from jobs import JobType, PermanentError, TransientError
from jobs.echo import Echo


class Flaky(JobType):
    """Crash with a plain exception when the payload says so; echo otherwise."""

    name = "test.flaky"
    description = (
        "Raises RuntimeError when payload.crash is true; sleeps payload.sleep_ms first "
        "(tests only)."
    )
    chunk_size = 100
    slice_size = 10

    def process(self, payload, file, context):
        """Sleep if asked, then crash or echo."""
        if payload.get("sleep_ms"):
            time.sleep(payload["sleep_ms"] / 1000)
        if payload.get("crash"):
            raise RuntimeError("boom")
        if payload.get("unserializable"):
            return {"value": object()}
        return payload


class Record(JobType):
    """Append one line per execution to the file named by BATCHSITE_TEST_EXEC_LOG.

    Each line is `n start end pid`: which item ran, when, and in which process, so a test
    can prove every item ran and no item ran twice at the same time.
    """

    name = "test.record"
    description = "Logs each execution to a file (tests only)."
    chunk_size = 1000
    slice_size = 100

    def process(self, payload, file, context):
        """Log the execution, sleeping `sleep_ms` in between start and end."""
        started = time.time()
        if payload.get("sleep_ms"):
            time.sleep(payload["sleep_ms"] / 1000)
        line = f"{payload['n']} {started:.6f} {time.time():.6f} {os.getpid()}\n"
        fd = os.open(os.environ["BATCHSITE_TEST_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return {"n": payload["n"]}


class Stamp(JobType):
    """Write `<input name>.stamp` holding the input's SHA-256; for file items (tests only)."""

    name = "test.stamp"
    description = "Writes NAME.stamp with the SHA-256 of the input file (tests only)."
    accepts_file = True
    chunk_size = 100
    slice_size = 10

    def process(self, payload, file, context):
        """Hash the input and write the stamp file."""
        digest = hashlib.sha256(file.read()).hexdigest()
        context.output_path(f"{context.input_name}.stamp").write_text(digest)
        return {"sha256": digest}


class Paced(Record):
    """test.record in chunks of 5 items, so a small batch spreads over many chunks."""

    name = "test.paced"
    description = "Logs each execution to a file, five items a chunk (tests only)."
    chunk_size = 5
    slice_size = 5


class Hang(JobType):
    """Spin in pure Python when the payload says so; echo otherwise (tests only)."""

    name = "test.hang"
    description = "Loops forever in Python when payload.hang is true (tests only)."
    chunk_size = 100
    slice_size = 10
    time_limit = 0.5
    max_time_limit = 5.0

    def process(self, payload, file, context):
        """Spin or echo."""
        while payload.get("hang"):
            pass
        return {**payload, "pid": os.getpid()}


class Block(JobType):
    """Block in a socket read that never gets data when the payload says so (tests only).

    With `timeouts_transient`, a timed-out attempt is retried up to `max_attempts`.
    """

    name = "test.block"
    description = "Waits forever on a socket when payload.block is true (tests only)."
    chunk_size = 100
    slice_size = 10
    time_limit = 0.5
    max_time_limit = 5.0
    max_attempts = 2
    retry_backoff = 0.01
    timeouts_transient = True

    def process(self, payload, file, context):
        """Block or echo."""
        if payload.get("block"):
            reader, writer = socket.socketpair()
            with reader, writer:
                reader.recv(1)
        return {**payload, "pid": os.getpid()}


class Quartered(Echo):
    """echo in chunks of 750 items, so 3,000 items make four chunks (tests only)."""

    name = "test.echo750"
    description = "echo, 750 items a chunk (tests only)."
    chunk_size = 750


class StampThenFail(JobType):
    """Write a stamp like test.stamp, then fail the first `fail_attempts` attempts (tests only).

    Transiently unless the payload says `permanent`: an attempt that fails after writing an
    output must leave nothing of it behind.
    """

    name = "test.stamp_then_fail"
    description = "Writes NAME.stamp, then fails its first attempts (tests only)."
    accepts_file = True
    retry_backoff = 0.01

    def process(self, payload, file, context):
        """Write the stamp; fail while the attempt is one of the first `fail_attempts`."""
        digest = hashlib.sha256(file.read()).hexdigest()
        context.output_path(f"{context.input_name}.stamp").write_text(digest)
        if context.attempt <= payload.get("fail_attempts", 0):
            if payload.get("permanent"):
                raise PermanentError("failed after writing its output")
            raise TransientError("failed after writing its output, for now")
        return {"sha256": digest, "attempt": context.attempt}
