"""The processes a benchmark scenario runs: qclusters, a web server, and their peak memory.

Peak memory is read from Linux's /proc (VmHWM) for a process and its descendants, so a
qcluster's workers count as well as its parent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MANAGE = str(Path(__file__).resolve().parents[2] / "manage.py")


def _children(pid: int) -> list[int]:
    """Return every descendant of `pid` (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident set size of one process in MB (VmHWM), 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_peak_rss_mb(pid: int) -> float:
    """Return the largest peak RSS among a process and its descendants."""
    return max([peak_rss_mb(p) for p in [pid, *_children(pid)]] or [0.0])


@dataclass
class Clusters:
    """Real `manage.py qcluster` processes for a scenario."""

    count: int
    workers: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    peak_mb: float = 0.0

    def start(self) -> Clusters:
        env = {**os.environ, "BATCHSITE_WORKERS": str(self.workers)}
        for _ in range(self.count):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, MANAGE, "qcluster"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        return self

    def sample(self) -> None:
        """Record the workers' peak memory so far."""
        for process in self.processes:
            self.peak_mb = max(self.peak_mb, tree_peak_rss_mb(process.pid))

    def stop(self) -> None:
        self.sample()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def running_clusters(count: int, workers: int):
    """Run `count` qclusters of `workers` workers for the block; stop them after it."""
    clusters = Clusters(count=count, workers=workers).start()
    try:
        yield clusters
    finally:
        clusters.stop()


def wait_until(predicate, *, timeout: float, clusters: Clusters | None = None) -> float:
    """Poll `predicate` until true; return the elapsed seconds."""
    started = time.perf_counter()
    last_sample = 0.0
    while not predicate():
        now = time.perf_counter()
        if now - started > timeout:
            raise TimeoutError(f"not done after {timeout:.0f}s")
        if clusters and now - last_sample > 1:
            clusters.sample()
            last_sample = now
        time.sleep(0.1)
    return time.perf_counter() - started


def clusters_wait_ready(count: int, *, timeout: float = 60) -> None:
    """Wait until `count` clusters report their workers up (django-q2's stats, a few s old)."""
    from django_q.conf import Conf
    from django_q.status import Stat

    def ready() -> bool:
        up = [stat for stat in Stat.get_all() if stat.status in (Conf.IDLE, Conf.WORKING)]
        return len(up) >= count

    wait_until(ready, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def web_server():
    """Run `manage.py runserver` on a free loopback port; yield (process, base API URL)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, MANAGE, "runserver", "--noreload", "--nothreading", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield server, f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)
