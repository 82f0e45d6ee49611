"""Tests for jobs.timelimit: the per-item time limit of the worker's main thread."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from jobs.timelimit import ItemTimeout, time_limit


def test_time_limit__stops_a_pure_python_loop():
    with pytest.raises(ItemTimeout), time_limit(0.2):  # noqa: PT012 - the loop is what is timed
        while True:
            pass


def test_time_limit__stops_a_blocking_socket_read():
    reader, writer = socket.socketpair()
    with reader, writer, pytest.raises(ItemTimeout), time_limit(0.2):
        reader.recv(1)


def test_time_limit__is_not_swallowed_by_except_exception():
    caught = []
    with pytest.raises(ItemTimeout), time_limit(0.2):  # noqa: PT012 - the catch-all is the test
        try:
            while True:
                pass
        except Exception as exc:  # a job type's catch-all must not hide the timeout
            caught.append(exc)
    assert caught == []


def test_time_limit__a_block_that_ends_in_time_is_never_interrupted_later():
    with time_limit(0.1):
        pass
    # Well past the old deadline and several watchdog rounds: nothing fires.
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:
        pass


def test_time_limit__outside_the_main_thread_the_block_runs_without_a_limit():
    finished = []

    def work():
        with time_limit(0.05):
            time.sleep(0.2)
        finished.append(True)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()

    assert finished == [True]
