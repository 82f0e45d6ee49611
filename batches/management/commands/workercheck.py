"""Say whether a worker cluster on this host is alive: exit 0 if one is, 1 if not.

For systemd and Kubernetes exec probes. A django-q2 cluster saves its stats every half
second into the broker's store (Redis, or the shared cache with the ORM broker), each kept
a few seconds; a cluster is alive when it saved them within --max-age seconds and is
neither stopping nor stopped. Clusters are told apart by the host name they record
(`socket.gethostname()`, a pod's name in Kubernetes) and by the pid of their
`manage.py qcluster` process.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

# Seconds between looks at the stats while --wait runs.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ClusterSeen:
    """A cluster's last saved stats: who it is, where it runs, how it is, how old they are."""

    cluster_id: str
    host: str
    pid: int
    status: str
    age: float

    def alive(self, *, max_age: float) -> bool:
        """Return True when the stats are fresh and the cluster still takes tasks."""
        from django_q.conf import Conf

        return self.age <= max_age and self.status not in (str(Conf.STOPPING), str(Conf.STOPPED))

    def describe(self) -> str:
        """Return one line naming the cluster and what its stats say."""
        return (
            f"cluster {self.cluster_id} (pid {self.pid}) on {self.host}: {self.status}, "
            f"stats {self.age:.1f} s old"
        )


def clusters_seen() -> list[ClusterSeen]:
    """Return every cluster of this queue whose stats the broker still keeps."""
    from django_q.status import Stat

    now = timezone.now()
    seen = [
        ClusterSeen(
            cluster_id=str(stat.cluster_id),
            host=str(getattr(stat, "host", "")),
            pid=int(getattr(stat, "pid", 0) or 0),
            status=str(getattr(stat, "status", "")),
            age=max((now - stat.timestamp).total_seconds(), 0.0),
        )
        for stat in Stat.get_all()
        if getattr(stat, "timestamp", None)
    ]
    return sorted(seen, key=lambda cluster: (cluster.host, cluster.pid, cluster.cluster_id))


class Command(BaseCommand):
    # A probe runs every few seconds: it reads the broker, nothing the system checks cover.
    requires_system_checks: list[str] = []
    help = (
        "Exit 0 when a worker cluster (manage.py qcluster) on this host saved its stats within "
        "--max-age seconds and is not stopping, else 1; print one line saying what was found. "
        "For systemd and Kubernetes exec probes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=socket.gethostname(),
            help="host name the cluster records (default: this host's, %(default)s)",
        )
        parser.add_argument(
            "--pid", type=int, help="only the cluster whose qcluster process has this pid"
        )
        parser.add_argument(
            "--max-age",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="oldest stats that still count as alive (default 60)",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="look again until a cluster is alive or this many seconds pass (default 0)",
        )

    def handle(self, *args, host, pid, max_age, wait, **options):
        if max_age <= 0:
            raise CommandError("--max-age must be more than 0 seconds")
        if wait < 0:
            raise CommandError("--wait must be 0 or more seconds")
        deadline = time.monotonic() + wait
        while True:
            ours, others = self._look(host=host, pid=pid)
            alive = [cluster for cluster in ours if cluster.alive(max_age=max_age)]
            if alive or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        wanted = host if pid is None else f"{host} with pid {pid}"
        if alive:
            self.stdout.write(f"alive: {'; '.join(cluster.describe() for cluster in alive)}")
            return
        if ours:
            found = "; ".join(cluster.describe() for cluster in ours)
        elif others:
            hosts = ", ".join(sorted({f"{c.host} (pid {c.pid})" for c in others}))
            found = f"only other clusters saved stats: {hosts}"
        else:
            found = (
                "no cluster of this queue saved stats (is `manage.py qcluster` running with "
                "the same BATCHSITE_BROKER_URL, BATCHSITE_QUEUE_NAME and DJANGO_SECRET_KEY?)"
            )
        raise CommandError(f"no live cluster on {wanted}: {found}", returncode=1)

    def _look(self, *, host: str, pid: int | None) -> tuple[list[ClusterSeen], list[ClusterSeen]]:
        """Return the clusters that match, and the others."""
        try:
            seen = clusters_seen()
        except Exception as exc:  # the broker is down: that is the answer, not a traceback
            raise CommandError(
                f"cannot read the clusters' stats from the broker: {exc}", returncode=1
            ) from exc
        ours = [c for c in seen if c.host == host and (pid is None or c.pid == pid)]
        return ours, [c for c in seen if c not in ours]
