"""A real S3-compatible server for the storage tests: moto's standalone server on loopback.

One server per test process (each xdist worker starts its own), on a free port, stopped at
the end; each test gets a bucket of its own and batchsite's "default" storage pointed at it,
configured as batchsite.settings does from BATCHSITE_S3_* variables.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
REGION = "us-east-1"
# moto accepts any credentials; these only have to be the same on both sides.
ACCESS_KEY = "batchsite-test"
SECRET_KEY = "batchsite-test-secret"
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as connection:
            connection.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return connection.recv(12).startswith(b"HTTP/")
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """Start `python -m moto.server` on a free loopback port; yield its URL."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed (it is a dev dependency: pip install -e '.[dev]')")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://{HOST}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Bucket:
    """A bucket on the test server, and a boto3 client to look into it."""

    endpoint: str
    name: str
    prefix: str
    client: object

    def keys(self, under: str = "") -> list[str]:
        """Return every key in the bucket under `under`, sorted (paginated, bounded)."""
        found: list[str] = []
        kwargs = {"Bucket": self.name, "Prefix": under}
        for _ in range(1000):
            page = self.client.list_objects_v2(**kwargs)
            found += [entry["Key"] for entry in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(found)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        raise AssertionError("more than 1000 pages of keys")

    def read(self, key: str) -> bytes:
        """Return the bytes stored at `key`."""
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def environ(self) -> dict[str, str]:
        """Return the BATCHSITE_S3_* variables that point batchsite at this bucket."""
        return {
            "BATCHSITE_S3_BUCKET": self.name,
            "BATCHSITE_S3_ENDPOINT_URL": self.endpoint,
            "BATCHSITE_S3_REGION": REGION,
            "BATCHSITE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "BATCHSITE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "BATCHSITE_S3_PREFIX": self.prefix,
        }


def storages_from(environ: dict[str, str]) -> dict:
    """Return the STORAGES batchsite.settings makes of `environ` (read in a fresh process)."""
    code = "from django.conf import settings; import json; print(json.dumps(settings.STORAGES))"
    env = {**os.environ, **environ, "DJANGO_SETTINGS_MODULE": "batchsite.settings"}
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@pytest.fixture
def s3(moto_server, settings, tmp_path) -> Bucket:
    """Give the test a bucket of its own and point the "default" storage at it.

    The local data dir is fresh too, so a test can show that no item file lands there.
    """
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    bucket = Bucket(
        endpoint=moto_server,
        name=f"batchsite-{uuid.uuid4().hex[:16]}",
        prefix="tenant-a",
        client=client,
    )
    client.create_bucket(Bucket=bucket.name)
    settings.BATCHSITE_DATA_DIR = tmp_path / "web"
    settings.MEDIA_ROOT = tmp_path / "web" / "files"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket.name,
                "endpoint_url": moto_server,
                "region_name": REGION,
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "location": bucket.prefix,
                "file_overwrite": True,
                "max_memory_size": 8 * 1024 * 1024,
            },
        },
    }
    return bucket
