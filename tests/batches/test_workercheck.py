"""Tests for `manage.py workercheck`: is a worker cluster on this host alive?

The stats read are real: saved into the broker's store the way a cluster saves them, or by
a real `qcluster` subprocess; the command runs in-process, and as the probe runs it (a
`manage.py` subprocess whose exit code is the answer).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat, Status

from tests.conftest import ROOT, database_url

HERE = socket.gethostname()
# For match=: a host name may hold dots.
HERE_RE = re.escape(HERE)


@pytest.fixture
def saved_stats(db):
    """Save cluster stats as a cluster does; forget them, and any left before, afterwards."""
    broker = get_broker()
    keys: list[str] = []

    def forget(key: str) -> None:
        if Conf.ORM:
            broker.cache.delete(key)
        else:
            broker.connection.delete(key)

    def save(*, host=HERE, pid=4242, status=Conf.IDLE, age=0.0) -> Status:
        stat = Status(pid=pid, cluster_id=uuid.uuid4())
        stat.host, stat.status = host, status
        stat.timestamp = timezone.now() - timedelta(seconds=age)
        key = Stat.get_key(stat.cluster_id)
        broker.set_stat(key, SignedPackage.dumps(stat, True), 60)
        keys.append(key)
        return stat

    for stat in Stat.get_all():
        forget(Stat.get_key(stat.cluster_id))
    cache.delete(Conf.Q_STAT)
    yield save
    for key in keys:
        forget(key)


def workercheck(*args: str) -> str:
    """Run the command in-process; return its stdout, or raise its CommandError."""
    out = StringIO()
    call_command("workercheck", *args, stdout=out)
    return out.getvalue()


def workercheck_process(*args: str) -> subprocess.CompletedProcess:
    """Run `manage.py workercheck` as a probe does, with the test run's environment."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url()}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "workercheck", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- what counts as alive ----------------------------------------------------------------------


def test_workercheck__a_fresh_cluster_here_is_alive(saved_stats):
    stat = saved_stats(status=Conf.WORKING, age=2)

    out = workercheck()

    assert out.startswith("alive: ")
    assert str(stat.cluster_id) in out
    assert f"(pid 4242) on {HERE}: Working, stats 2." in out


def test_workercheck__without_any_cluster_fails(saved_stats):
    with pytest.raises(CommandError, match=f"no live cluster on {HERE_RE}: no cluster") as exc:
        workercheck()

    assert exc.value.returncode == 1


@pytest.mark.parametrize(
    ("seen", "said"),
    [
        ([{"age": 90}], "Idle, stats 90."),
        ([{"status": Conf.STOPPED}], "Stopped"),
        ([{"status": Conf.STOPPING}], "Stopping"),
        ([{"host": "worker-b"}], "only other clusters saved stats: worker-b (pid 4242)"),
    ],
    ids=["stale", "stopped", "stopping", "other-host"],
)
def test_workercheck__no_fresh_running_cluster_here_fails(saved_stats, seen, said):
    for stat in seen:
        saved_stats(**stat)

    with pytest.raises(CommandError, match=f"no live cluster on {HERE_RE}") as exc:
        workercheck()

    assert said in str(exc.value)
    assert exc.value.returncode == 1


def test_workercheck__one_live_cluster_of_several_is_enough(saved_stats):
    saved_stats(pid=1, status=Conf.STOPPED)
    saved_stats(pid=2, age=120)
    live = saved_stats(pid=3)

    out = workercheck()

    assert str(live.cluster_id) in out
    assert "(pid 1)" not in out
    assert "(pid 2)" not in out


def test_workercheck__host_names_another_host(saved_stats):
    saved_stats(host="worker-b")

    assert "on worker-b: Idle" in workercheck("--host", "worker-b")
    with pytest.raises(CommandError, match="no live cluster on worker-c"):
        workercheck("--host", "worker-c")


def test_workercheck__pid_picks_one_cluster(saved_stats):
    saved_stats(pid=10)
    saved_stats(pid=11, status=Conf.STOPPED)

    assert "(pid 10)" in workercheck("--pid", "10")
    with pytest.raises(CommandError, match=f"no live cluster on {HERE_RE} with pid 11: .*Stopped"):
        workercheck("--pid", "11")
    with pytest.raises(CommandError, match=f"on {HERE_RE} with pid 12: only other clusters"):
        workercheck("--pid", "12")


def test_workercheck__max_age_sets_what_is_fresh(saved_stats):
    saved_stats(age=10)

    assert workercheck("--max-age", "30").startswith("alive: ")
    with pytest.raises(CommandError, match=r"Idle, stats 10\."):
        workercheck("--max-age", "5")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--max-age", "0"], "--max-age must be more than 0"), (["--wait", "-1"], "--wait must be")],
)
def test_workercheck__refuses_nonsense_options(saved_stats, args, message):
    with pytest.raises(CommandError, match=message):
        workercheck(*args)


def test_workercheck__says_so_when_the_broker_cannot_be_read(saved_stats, monkeypatch):
    def unreadable(broker=None):
        raise ConnectionError("redis.internal:6379 refused")

    monkeypatch.setattr(Stat, "get_all", staticmethod(unreadable))

    with pytest.raises(CommandError, match=r"cannot read the clusters' stats.*refused") as exc:
        workercheck()

    assert exc.value.returncode == 1


# --- with a real cluster -----------------------------------------------------------------------


@pytest.mark.cluster
def test_workercheck__a_running_qcluster_passes_and_a_stopped_one_fails(cluster):
    pid = str(cluster.process.pid)

    # As a systemd unit's ExecStartPost does: wait until this very cluster reports.
    started = workercheck_process("--pid", pid, "--wait", "60")
    assert started.returncode == 0, started.stdout + started.stderr + cluster.output()
    assert f"(pid {pid}) on {HERE}:" in started.stdout

    probe = workercheck_process()
    assert probe.returncode == 0, probe.stderr
    elsewhere = workercheck_process("--host", f"not-{HERE}")
    assert elsewhere.returncode == 1
    assert f"no live cluster on not-{HERE}: only other clusters saved stats" in elsewhere.stderr

    cluster.stop()
    stopped = workercheck_process("--pid", pid)
    assert stopped.returncode == 1
    assert f"no live cluster on {HERE} with pid {pid}" in stopped.stderr
