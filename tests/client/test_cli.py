"""The `batchsite` console script, run as a subprocess against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batches.models import Batch
from batchsite_client import Client

BATCHSITE = Path(sys.executable).parent / "batchsite"


def run(live_server, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with the server's URL and `key` in its environment."""
    env = {**os.environ, "BATCHSITE_URL": live_server.url, "BATCHSITE_KEY": key}
    return subprocess.run(
        [str(BATCHSITE), *args], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.cluster
@pytest.mark.django_db(transaction=True)
def test_cli__submit_wait_then_status_and_results(live_server, api_key, cluster, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"payload": {"n": n}}) + "\n" for n in range(12)))

    submitted = run(live_server, api_key, "submit", str(items), "--type", "echo",
                    "--label", "cli", "--wait", "--poll", "0.2")  # fmt: skip

    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    batch = Batch.objects.get(pk=batch_id)
    assert (batch.label, batch.status) == ("cli", Batch.Status.FINISHED)
    assert "added 12 items" in submitted.stderr
    assert f"{batch_id} finished 12/12" in submitted.stderr.splitlines()[-1]

    status = run(live_server, api_key, "status", batch_id)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{batch_id} finished 12/12 (100%): 12 succeeded, 0 failed")

    watched = run(live_server, api_key, "status", batch_id, "--watch", "--json")
    assert watched.returncode == 0
    assert json.loads(watched.stdout)["status"] == "finished"

    results = run(live_server, api_key, "results", batch_id)
    assert results.returncode == 0, results.stderr
    lines = [json.loads(line) for line in results.stdout.splitlines()]
    assert sorted(line["result"]["n"] for line in lines) == list(range(12))


@pytest.mark.django_db(transaction=True)
def test_cli__a_failed_batch_exits_3(live_server, api_key, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"payload": {"fail": True}}) + "\n")

    with Client(live_server.url, api_key) as client:
        batch = client.create_batch(type="echo", options={"atomic": True})
        client.upload(batch, items)
        client.commit(batch)

    watched = run(live_server, api_key, "status", batch["id"], "--watch", "--poll", "0.1")

    assert watched.returncode == 3, watched.stderr
    assert watched.stdout.startswith(f"{batch['id']} failed 1/1")
    assert Batch.objects.get(pk=batch["id"]).status == Batch.Status.FAILED


@pytest.mark.django_db(transaction=True)
def test_cli__bad_key_is_a_one_line_error(live_server, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"payload": {}}) + "\n")

    for args in (["status", "00000000-0000-4000-8000-000000000001"],
                 ["submit", str(items), "--type", "echo"]):  # fmt: skip
        done = run(live_server, "wrong-key", *args)

        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1
        assert done.stderr.startswith("batchsite: error: 401 not_authenticated: ")
    assert not Batch.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_cli__unknown_batch_and_missing_key(live_server, api_key):
    missing = run(live_server, api_key, "status", "00000000-0000-4000-8000-000000000001")
    assert missing.returncode == 1
    assert missing.stderr.startswith("batchsite: error: 404 not_found: ")

    env = {k: v for k, v in os.environ.items() if k != "BATCHSITE_KEY"}
    env["BATCHSITE_URL"] = live_server.url
    no_key = subprocess.run(
        [str(BATCHSITE), "status", "x"], env=env, capture_output=True, text=True, timeout=60
    )
    assert no_key.returncode == 1
    assert no_key.stderr == "batchsite: error: no API key: set BATCHSITE_KEY or --key\n"
