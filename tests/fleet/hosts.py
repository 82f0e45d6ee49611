"""Hosts for the fleet tests: Linux network namespaces joined by a bridge on one machine.

Each host is a network namespace with one veth link to a bridge in the root namespace,
where the test itself runs as the client. The hosts share the machine's files but not its
network: a process on one reaches another only through the bridge, by the other's
address, and cutting a host's link (`cut`) partitions it from everyone. Every process a
host runs is started through `ip netns exec` with its own host name (a UTS namespace),
so django-q2 records each worker cluster under its host's name.

Only root can do this; `Fleet` refuses early otherwise. Everything it makes is torn down
by `close()`, processes first, whatever state the test left them in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A private /24 nothing on a test machine is expected to use; `Fleet` checks it is free.
SUBNET = "10.213.0"
STOP_SECONDS = 20


def fleet_unsupported_reason() -> str:
    """Say why this machine cannot build fleet hosts, or return ''."""
    if os.geteuid() != 0:
        return "fleet tests make network namespaces: they need root"
    if shutil.which("ip") is None:
        return "fleet tests need iproute2's `ip`"
    if shutil.which("unshare") is None:
        return "fleet tests need util-linux's `unshare`"
    return ""


def run(*argv: str) -> str:
    """Run a command to its end; return its output, raising with its stderr if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def wait_until(what: str, check: Callable[[], object], *, timeout: float, every: float = 0.2):
    """Return check()'s first true value, trying for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


@dataclass
class Host:
    """One network namespace with an address on the fleet's bridge."""

    name: str
    address: str
    namespace: str
    link: str  # the veth end in the root namespace, on the bridge
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        log: Path,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        """Start `argv` on this host (its network, its host name), output to `log`."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                self.command(argv, user=user),
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def command(self, argv: Sequence[str], *, user: str | None = None) -> list[str]:
        """Return the command line that runs `argv` on this host, as `user` if given."""
        inner = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh", *inner,
        ]  # fmt: skip

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM) -> int | None:
        """Signal a process this host started and wait for it (bounded); kill it if it stays."""
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                _kill_group(process)
        return process.returncode


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_SECONDS)


class Fleet:
    """A bridge and the hosts on it; `close()` removes them all."""

    def __init__(self) -> None:
        reason = fleet_unsupported_reason()
        if reason:
            raise RuntimeError(reason)
        if SUBNET + "." in run("ip", "-o", "-4", "addr", "show"):
            raise RuntimeError(f"{SUBNET}.0/24 is in use on this machine already")
        tag = f"{os.getpid() % 100000}"
        self.prefix = f"bsf{tag}"
        self.bridge = f"{self.prefix}br"
        self.hosts: dict[str, Host] = {}
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        self.client_address = f"{SUBNET}.1"

    def host(self, name: str) -> Host:
        """Make a host called `name` with the next address on the bridge."""
        number = len(self.hosts) + 2
        namespace = f"{self.prefix}-{name}"
        link = f"{self.prefix}v{number}"
        run("ip", "netns", "add", namespace)
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        run("ip", "link", "set", link, "master", self.bridge, "up")
        address = f"{SUBNET}.{number}"
        run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", namespace, "link", "set", "eth0", "up")
        run("ip", "-n", namespace, "link", "set", "lo", "up")
        self.hosts[name] = host = Host(name, address, namespace, link)
        return host

    def cut(self, host: Host) -> None:
        """Partition the host: its link goes down, so nothing reaches it or leaves it."""
        run("ip", "link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        """Bring the host's link back up."""
        run("ip", "link", "set", host.link, "up")

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), then remove namespaces and bridge."""
        for host in self.hosts.values():
            for process in host.processes:
                if process.poll() is None:
                    host.stop(process)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.namespace], check=False, timeout=30)
            subprocess.run(["ip", "link", "del", host.link], check=False, timeout=30,
                           capture_output=True)  # fmt: skip
        subprocess.run(["ip", "link", "del", self.bridge], check=False, timeout=30)
