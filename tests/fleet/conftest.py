"""The fleet: batchsite as several hosts on one machine, for `pytest -m fleet`.

A database host runs its own PostgreSQL (initdb and postgres as the `postgres` user, which
PostgreSQL requires) and its own redis-server; a storage host runs an S3-compatible server
(moto's); a web host runs gunicorn with deploy/gunicorn.conf.py; two worker hosts run
`manage.py qcluster`. Each batchsite host has its own data dir: files go to the bucket,
and nothing is shared but the network (and the signing key, which a deployment hands to
each host like any other secret). The test client is the root
namespace. The fleet tests run only when asked for (`-m fleet`, as .ci/run does); with
BATCHSITE_FLEET_REQUIRED=1 a machine that cannot build the hosts fails them instead of
skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.fleet.hosts import Fleet, Host, fleet_unsupported_reason, run, wait_until

# What the fleet tests measured, printed in pytest's summary.
FIGURES: list[str] = []
BUCKET = "batchsite-fleet"
# Short, so a cut-off worker's chunk is taken over within the test's patience.
LEASE_SECONDS = 10
WORKERS_PER_CLUSTER = 2


def pytest_collection_modifyitems(config, items):
    fleet_items = [item for item in items if item.get_closest_marker("fleet")]
    if not fleet_items:
        return
    if "fleet" not in (config.option.markexpr or ""):
        reason = "fleet tests run only when asked for: pytest -m fleet"
    else:
        reason = fleet_unsupported_reason() or _postgres_bin_problem()
        if reason and os.environ.get("BATCHSITE_FLEET_REQUIRED") == "1":
            raise pytest.UsageError(f"BATCHSITE_FLEET_REQUIRED=1 but {reason}")
    if reason:
        for item in fleet_items:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    for figure in FIGURES:
        terminalreporter.write_sep("=", "fleet")
        terminalreporter.write_line(figure)


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _postgres_bin_problem() -> str:
    if _postgres_bin() is None:
        return "fleet tests need PostgreSQL's server programs (/usr/lib/postgresql/*/bin)"
    if shutil.which("redis-server") is None:
        return "fleet tests need redis-server"
    return ""


@dataclass
class Site:
    """The running fleet, as a test sees it."""

    fleet: Fleet
    root: Path
    env: dict[str, str]
    db: Host
    storage: Host
    web: Host
    workers: dict[str, Host]
    base_url: str
    key: str
    exec_log: Path
    clusters: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def client(self, timeout: float = 60) -> httpx.Client:
        """Return an HTTP client for the API, from the root namespace."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Api-Key {self.key}"},
            timeout=timeout,
        )

    def host_env(self, host: Host, **extra: str) -> dict[str, str]:
        """Return the environment of a batchsite process on `host`: its own data dir."""
        data_dir = self.root / host.name
        data_dir.mkdir(exist_ok=True)
        return {**self.env, "BATCHSITE_DATA_DIR": str(data_dir), **extra}

    def cluster_start(self, name: str) -> subprocess.Popen:
        """Start a qcluster on worker host `name`."""
        host = self.workers[name]
        process = host.start(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            env=self.host_env(host),
            log=self.root / f"{name}.log",
            cwd=ROOT,
        )
        self.clusters[name] = process
        return process

    def sql(self, query: str, *params) -> list[tuple]:
        """Run one query on the fleet's database from the root namespace."""
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=10) as connection:
            return connection.execute(query, params).fetchall()


def _manage(host: Host, env: dict[str, str], *argv: str) -> str:
    """Run a manage.py command on `host` to its end (bounded); return its stdout."""
    done = subprocess.run(
        host.command([sys.executable, str(ROOT / "manage.py"), *argv]),
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _database_start(fleet: Fleet, db: Host, root: Path) -> str:
    """Start PostgreSQL and Redis on the database host; return its DATABASE_URL."""
    bin_dir = _postgres_bin()
    assert bin_dir is not None
    pgdata = root / "pgdata"
    pgdata.mkdir(mode=0o700)
    shutil.chown(pgdata, "postgres", "postgres")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--no-sync", "--no-instructions"]  # fmt: skip
    run("runuser", "-u", "postgres", "--", *initdb)
    with open(pgdata / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {db.address.rsplit('.', 1)[0]}.0/24 trust\n")
    db.start(
        [
            str(bin_dir / "postgres"), "-D", str(pgdata),
            "-c", f"listen_addresses={db.address}", "-c", "port=5432",
            "-c", f"unix_socket_directories={pgdata}", "-c", "max_connections=200",
            # A worker cut off mid-transaction holds its rows' locks until its session
            # ends; this ends it by the time its lease has run out.
            "-c", f"idle_in_transaction_session_timeout={LEASE_SECONDS}s",
        ],
        env=env, log=root / "postgres.log", user="postgres",
    )  # fmt: skip
    db.start(
        ["redis-server", "--bind", db.address, "--port", "6379", "--save", "",
         "--appendonly", "no", "--protected-mode", "no"],
        env=env, log=root / "redis.log",
    )  # fmt: skip
    wait_until(
        "PostgreSQL on the database host",
        lambda: (
            subprocess.run(
                [str(bin_dir / "pg_isready"), "-q", "-h", db.address], timeout=10, check=False
            ).returncode
            == 0
        ),
        timeout=60,
    )
    run(str(bin_dir / "psql"), "-h", db.address, "-U", "postgres", "-qc",
        "CREATE DATABASE batchsite")  # fmt: skip
    return f"postgres://postgres@{db.address}:5432/batchsite"


def _storage_start(storage: Host, root: Path) -> str:
    """Start moto's S3 server on the storage host, make the bucket; return the endpoint."""
    import boto3

    storage.start(
        [sys.executable, "-m", "moto.server", "-H", storage.address, "-p", "9000"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        log=root / "storage.log",
    )
    endpoint = f"http://{storage.address}:9000"
    wait_until(
        "the S3 server on the storage host",
        lambda: httpx.get(endpoint, timeout=2).status_code < 500,
        timeout=60,
    )
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="fleet", aws_secret_access_key="fleet-secret",
    ).create_bucket(Bucket=BUCKET)  # fmt: skip
    return endpoint


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """Build the fleet: database, web and two worker hosts; tear it all down after."""
    root = Path(tempfile.mkdtemp(prefix="batchsite-fleet-"))
    root.chmod(0o755)  # the postgres user must reach its data dir inside
    fleet = Fleet()
    try:
        db = fleet.host("db")
        storage = fleet.host("storage")
        web = fleet.host("web")
        workers = {name: fleet.host(name) for name in ("w1", "w2")}
        database_url = _database_start(fleet, db, root)
        endpoint = _storage_start(storage, root)
        exec_log = root / "exec.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "BATCHSITE_TEST_CLUSTER": "1",
            "DJANGO_SECRET_KEY": "fleet-tests-only-not-secret",
            "DATABASE_URL": database_url,
            "BATCHSITE_BROKER_URL": f"redis://{db.address}:6379/0",
            "BATCHSITE_QUEUE_NAME": "fleet",
            "BATCHSITE_LEASE_SECONDS": str(LEASE_SECONDS),
            "BATCHSITE_WORKERS": str(WORKERS_PER_CLUSTER),
            "BATCHSITE_TEST_EXEC_LOG": str(exec_log),
            "DJANGO_ALLOWED_HOSTS": web.address,
            "BATCHSITE_S3_BUCKET": BUCKET,
            "BATCHSITE_S3_ENDPOINT_URL": endpoint,
            "BATCHSITE_S3_REGION": "us-east-1",
            "BATCHSITE_S3_ACCESS_KEY_ID": "fleet",
            "BATCHSITE_S3_SECRET_ACCESS_KEY": "fleet-secret",
            "BATCHSITE_PACKAGE_REDIRECT": "1",
            "BATCHSITE_SIGNING_KEY": str(root / "signing" / "key.pem"),
            "BATCHSITE_SIGNING_CERT": str(root / "signing" / "cert.pem"),
        }
        base_url = f"http://{web.address}:8000/api/v1"
        site = Site(fleet, root, env, db, storage, web, workers, base_url, "", exec_log)
        web_env = site.host_env(web, BATCHSITE_BIND=f"{web.address}:8000",
                                BATCHSITE_WEB_WORKERS="2")  # fmt: skip
        log = root / "web.log"
        _manage(web, web_env, "migrate", "--no-input")
        _manage(web, web_env, "createaccount", "fleet")
        (root / "signing").mkdir()
        _manage(web, web_env, "createsigningkey")
        site.key = _manage(web, web_env, "createapikey", "fleet").strip()
        web.start(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
            env=web_env, log=log, cwd=ROOT,
        )  # fmt: skip
        wait_until(
            "gunicorn on the web host",
            lambda: httpx.get(f"http://{web.address}:8000/readyz", timeout=2).status_code == 200,
            timeout=60,
        )
        for name in workers:
            site.cluster_start(name)
        yield site
    finally:
        for host in reversed(list(fleet.hosts.values())):
            for process in reversed(host.processes):
                # PostgreSQL's fast shutdown is SIGINT; SIGTERM waits for its clients.
                sig = signal.SIGINT if host is fleet.hosts.get("db") else signal.SIGTERM
                host.stop(process, sig)
        fleet.close()
        if os.environ.get("BATCHSITE_FLEET_KEEP") == "1":
            print(f"fleet logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
