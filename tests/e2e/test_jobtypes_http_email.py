"""`http.request` and `email.send` batches run by a real `manage.py qcluster` subprocess.

Both types must be built in (jobs.registry.BUILTIN_TYPES): the subprocess reads
tests/settings.py, whose BATCHSITE_JOB_TYPES lists only the test types. The email test
relies on tests/settings.py switching to the file-based mail backend, writing into
BATCHSITE_TEST_EMAIL_DIR, when that variable is set.
"""

from __future__ import annotations

import re

import pytest
from werkzeug import Response

from batches.models import Batch, Item
from tests.e2e.helpers import wait_terminal
from tests.helpers.api import create_batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_cluster_http_request__20_requests_all_succeed(
    client_a, cluster_factory, httpserver, settings
):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]

    def answer(request):
        return Response(f'{{"n": {int(request.args["n"])}}}', content_type="application/json")

    httpserver.expect_request("/lookup").respond_with_handler(answer)
    cluster = cluster_factory(env={"BATCHSITE_OUTBOUND_ALLOWED_HOSTS": "localhost"})
    items = [
        {"external_id": f"biz-{n}", "payload": {"url": httpserver.url_for(f"/lookup?n={n}")}}
        for n in range(20)
    ]

    batch = create_batch(client_a, type="http.request", items=items, commit=True)
    batch = wait_terminal(batch["id"], cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts()["succeeded"] == 20, list(
        Item.objects.filter(batch=batch)
        .exclude(status="succeeded")
        .values("index", "error_code", "error_message")
    )
    results = dict(Item.objects.filter(batch=batch).values_list("index", "result"))
    assert {index: result["json"] for index, result in results.items()} == {
        n: {"n": n} for n in range(20)
    }
    assert all(result["status"] == 200 for result in results.values())
    assert sorted(int(request.args["n"]) for request, _ in httpserver.log) == list(range(20))


def test_cluster_email_send__five_letters_are_written_by_the_file_backend(
    client_a, cluster_factory, tmp_path
):
    outbox = tmp_path / "mail"
    outbox.mkdir()
    cluster = cluster_factory(env={"BATCHSITE_TEST_EMAIL_DIR": str(outbox)})
    items = [
        {"payload": {"to": f"user{n}@example.org", "subject": f"e2e letter {n}", "text": "Hi"}}
        for n in range(5)
    ]

    batch = create_batch(client_a, type="email.send", items=items, commit=True)
    batch = wait_terminal(batch["id"], cluster)

    assert batch.status == Batch.Status.FINISHED
    assert batch.counts()["succeeded"] == 5
    # The file backend writes one file per connection, named by time and object id, so
    # two connections may share a file: count the messages, not the files.
    written = "".join(path.read_text() for path in outbox.iterdir())
    subjects = re.findall(r"^Subject: (e2e letter \d+)$", written, flags=re.MULTILINE)
    assert sorted(subjects) == [f"e2e letter {n}" for n in range(5)]
    message_ids = set(re.findall(r"^Message-ID: (\S+)$", written, flags=re.MULTILINE))
    results = Item.objects.filter(batch=batch).values_list("result", flat=True)
    assert {result["message_id"] for result in results} == message_ids
