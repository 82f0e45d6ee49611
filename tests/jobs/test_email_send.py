"""Tests for the `email.send` job type, with Django's locmem mail backend."""

from __future__ import annotations

import smtplib

import pytest
from django.core import mail
from django.core.mail.backends import locmem
from rest_framework.test import APIClient

from batches import engine, services
from batches.models import Batch, Item
from jobs import JobContext, PermanentError, TransientError, get_job_type
from jobs.base import PayloadError
from jobs.email_send import EmailSend
from tests.compat.test_brightlocal import JOBS as BRIGHTLOCAL_JOBS
from tests.helpers.api import BATCHES, assert_problem, error_fields

TYPE_PATH = "jobs.email_send.EmailSend"


@pytest.fixture(autouse=True)
def _registered(settings):
    settings.BATCHSITE_JOB_TYPES = [*settings.BATCHSITE_JOB_TYPES, TYPE_PATH]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "batches@sender.example"
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = ["@sender.example"]


@pytest.fixture
def job() -> EmailSend:
    return EmailSend()


def letter(n: int = 0, **extra) -> dict:
    return {"to": f"user{n}@example.org", "subject": f"Letter {n}", "text": f"Hello {n}", **extra}


def run(job: EmailSend, payload: dict):
    return job.process(payload, None, JobContext(attempt=1, label="test#0"))


@pytest.fixture
def backend_raises(monkeypatch):
    """Make the mail backend raise `error` on the given sends (1-based), or on every send."""

    def arrange(error: Exception, *, on: set[int] | None = None) -> None:
        real = locmem.EmailBackend.send_messages
        calls = [0]

        def send_messages(self, messages):
            calls[0] += 1
            if on is None or calls[0] in on:
                raise error
            return real(self, messages)

        monkeypatch.setattr(locmem.EmailBackend, "send_messages", send_messages)

    return arrange


# --- payload_check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        letter(),
        letter(to=["a@example.org", "b@example.org"]),
        letter(to="Jane Doe <jane@example.org>"),
        letter(to=['"Doe, Jane" <jane@example.org>']),
        letter(html="<p>Hello</p>"),
        letter(**{"from": "Sender <noreply@sender.example>"}),
        letter(text=""),
    ],
)
def test_email_send_validate_payload__accepts(job, payload):
    assert job.payload_check(payload) is None


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        pytest.param({"subject": "s", "text": "t"}, "payload.to", "is required", id="to-missing"),
        pytest.param(letter(to="not-an-address"), "payload.to", "valid email", id="to-bad"),
        pytest.param(letter(to=""), "payload.to", "valid email", id="to-empty"),
        pytest.param(letter(to=[]), "payload.to", "must not be empty", id="to-empty-list"),
        pytest.param(letter(to=5), "payload.to", "a string or a list", id="to-int"),
        pytest.param(
            letter(to=["ok@example.org", "nope"]), "payload.to[1]", "valid email", id="to-list-bad"
        ),
        pytest.param(letter(to=["ok@example.org", 7]), "payload.to[1]", "string", id="to-list-int"),
        pytest.param(
            letter(to="a@example.org\nBcc: victim@example.org"),
            "payload.to",
            "one line",
            id="to-newline",
        ),
        pytest.param(letter(to=["a@example.org"] * 101), "payload.to", "at most 100", id="to-many"),
        pytest.param({"to": "a@example.org", "text": "t"}, "payload.subject", "required", id="s"),
        pytest.param(letter(subject=""), "payload.subject", "not be empty", id="subject-empty"),
        pytest.param(letter(subject=3), "payload.subject", "a string", id="subject-int"),
        pytest.param(
            letter(subject="Hi\r\nBcc: victim@example.org"),
            "payload.subject",
            "one line",
            id="subject-newline",
        ),
        pytest.param(letter(subject="x" * 999), "payload.subject", "at most", id="subject-long"),
        pytest.param({"to": "a@example.org", "subject": "s"}, "payload.text", "required", id="t"),
        pytest.param(letter(text=None), "payload.text", "string", id="text-null"),
        pytest.param(letter(html=["<p>"]), "payload.html", "string", id="html-list"),
        pytest.param(letter(**{"from": "nobody"}), "payload.from", "valid email", id="from-bad"),
        pytest.param(letter(cc="a@example.org"), "payload.cc", "not a field", id="unknown"),
    ],
)
def test_email_send_validate_payload__refuses(job, payload, field, message):
    with pytest.raises(PayloadError) as caught:
        job.payload_check(payload)

    assert field in caught.value.errors, caught.value.errors
    assert message in caught.value.errors[field]


@pytest.mark.parametrize("payload", [None, [], "a@example.org"])
def test_email_send_validate_payload__refuses_a_non_object(job, payload):
    with pytest.raises(PayloadError) as caught:
        job.payload_check(payload)

    assert caught.value.errors == {"payload": "must be a JSON object"}


def test_email_send_submission__bad_address_is_refused_through_the_api(client_a):
    body = {
        "type": "email.send",
        "items": [
            {"payload": letter(0)},
            {"payload": letter(1, to="not-an-address")},
            {"payload": letter(2, to=["ok@example.org", "also bad"])},
        ],
        "commit": True,
    }

    response = client_a.post(BATCHES, body, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {
        "[1].payload.to",
        "[2].payload.to[1]",
    }
    assert not Item.objects.exists()
    assert mail.outbox == []


# --- allowed senders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "sender"),
    [
        pytest.param([], "batches@sender.example", id="default-from"),
        pytest.param([], "Batches <batches@SENDER.example>", id="default-from-named-domain-case"),
        pytest.param(["shop@shop.example"], "shop@shop.example", id="address"),
        pytest.param(["shop@shop.example"], '"Shop, Inc." <shop@Shop.Example>', id="named"),
        pytest.param(["@shop.example"], "Billing <billing@shop.example>", id="domain"),
        pytest.param(["@SHOP.example"], "any@shop.EXAMPLE", id="domain-case"),
        pytest.param(["@xn--bcher-kva.example"], "a@bücher.example", id="domain-idna"),
    ],
)
def test_email_send_sender__allowed(job, settings, allowed, sender):
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = allowed

    assert job.payload_check(letter(**{"from": sender})) is None


@pytest.mark.parametrize(
    ("allowed", "sender"),
    [
        pytest.param([], "someone@sender.example", id="default-only-its-address"),
        pytest.param(["shop@shop.example"], "other@shop.example", id="other-address"),
        pytest.param(["shop@shop.example"], "Shop@shop.example", id="local-part-case"),
        pytest.param(["@shop.example"], "a@mail.shop.example", id="subdomain"),
        pytest.param(["@shop.example"], "a@shop.example.evil.example", id="suffix"),
        pytest.param(["@shop.example"], "a@evilshop.example", id="ends-alike"),
        pytest.param(
            ["@shop.example"], '"a@shop.example" <ceo@evil.example>', id="address-as-name"
        ),
        pytest.param(["@shop.example"], "a@shop.example <ceo@evil.example>", id="unquoted-name"),
    ],
)
def test_email_send_sender__refused(job, settings, allowed, sender):
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = allowed

    with pytest.raises(PayloadError) as caught:
        job.payload_check(letter(**{"from": sender}))

    message = caught.value.errors["payload.from"]
    assert "is not a sender this server may send as" in message
    assert "batches@sender.example" in message  # names what is allowed


def test_email_send_sender__refused_through_the_api_and_nothing_is_written(settings, client_a):
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = []
    body = {
        "type": "email.send",
        "items": [
            {"payload": letter(0, **{"from": "batches@sender.example"})},
            {"payload": letter(1, **{"from": "Support <support@elsewhere.example>"})},
        ],
        "commit": True,
    }

    response = client_a.post(BATCHES, body, format="json")

    problem = assert_problem(response, 400, "invalid")
    assert error_fields(problem) == {"[1].payload.from"}
    assert "support@elsewhere.example is not a sender" in problem["errors"][0]["message"]
    assert not Batch.objects.exists()
    assert not Item.objects.exists()
    assert mail.outbox == []


def test_email_send_sender__refused_when_items_are_added_to_an_open_batch(
    settings, client_a, account
):
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = ["@shop.example"]
    batch, _ = services.batch_create(account=account, actor="test", type="email.send")
    items = [{"payload": letter(n, **{"from": f"u{n}@shop.example"})} for n in range(2)]
    items.append({"payload": letter(2, **{"from": "u2@shop.example.evil.example"})})

    response = client_a.post(f"{BATCHES}{batch.id}/items/", items, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {"[2].payload.from"}
    assert batch.items.count() == 0


def test_email_send_sender__refused_through_a_dialect_in_its_own_shape(settings, account):
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = []
    _, raw = services.api_key_create(account=account, name="brightlocal")
    batch, _ = services.batch_create(account=account, actor="test")
    client = APIClient()

    response = client.post(
        BRIGHTLOCAL_JOBS,
        {
            "api-key": raw,
            "batch-id": batch.number,
            "job-type": "email.send",
            **letter(),
            "from": "ceo@evil.example",
        },
        format="json",
    )

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False
    assert "ceo@evil.example is not a sender" in body["errors"]["from"]
    assert batch.items.count() == 0


def test_email_send_sender__checked_again_when_the_item_runs(
    settings, account, mailoutbox, django_capture_on_commit_callbacks
):
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = ["@shop.example"]
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        type="email.send",
        items=[{"payload": letter(0, **{"from": "news@shop.example"})}],
    )
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = []  # the operator narrowed it meanwhile

    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=batch, actor="test")

    item = Item.objects.get(batch=batch)
    assert item.status == Item.Status.FAILED
    assert item.error_code == "bad_payload"
    assert "news@shop.example is not a sender" in item.error_message
    assert mailoutbox == []


def test_email_send_sender__an_atomic_batch_sends_nothing_when_one_is_no_longer_allowed(
    job, settings, mailoutbox
):
    payloads = [letter(0), letter(1, **{"from": "news@sender.example"})]
    settings.BATCHSITE_EMAIL_ALLOWED_FROM = []

    with pytest.raises(PermanentError) as caught:
        job.finalize_send(payloads)

    assert caught.value.code == "not_prepared"
    assert "news@sender.example is not a sender" in caught.value.message
    assert mailoutbox == []


# --- process ------------------------------------------------------------------------------------


def test_email_send_process__sends_one_message(job, mailoutbox):
    result = run(job, letter(7, to=["a@example.org", "Bee <b@example.org>"]))

    assert len(mailoutbox) == 1
    sent = mailoutbox[0]
    assert sent.to == ["a@example.org", "Bee <b@example.org>"]
    assert sent.subject == "Letter 7"
    assert sent.body == "Hello 7"
    assert sent.from_email == "batches@sender.example"
    assert result == {
        "to": ["a@example.org", "Bee <b@example.org>"],
        "message_id": sent.message()["Message-ID"],
    }
    assert result["message_id"].startswith("<")


def test_email_send_process__html_goes_as_an_alternative(job, mailoutbox):
    run(job, letter(html="<p>Hello <b>0</b></p>"))

    sent = mailoutbox[0]
    assert [tuple(alternative) for alternative in sent.alternatives] == [
        ("<p>Hello <b>0</b></p>", "text/html")
    ]
    rendered = sent.message()
    assert rendered.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in rendered.get_payload()] == [
        "text/plain",
        "text/html",
    ]


def test_email_send_process__without_html_is_plain_text(job, mailoutbox):
    run(job, letter())

    assert mailoutbox[0].alternatives == []
    assert mailoutbox[0].message().get_content_type() == "text/plain"


def test_email_send_process__from_overrides_the_default(job, mailoutbox):
    run(job, letter(**{"from": "Billing <billing@sender.example>"}))

    assert mailoutbox[0].from_email == "Billing <billing@sender.example>"


def test_email_send_process__a_bad_payload_fails_permanently_without_sending(job, mailoutbox):
    with pytest.raises(PermanentError) as caught:
        run(job, letter(to="not-an-address"))

    assert caught.value.code == "bad_payload"
    assert mailoutbox == []


def test_email_send_process__refused_recipient_is_permanent(job, backend_raises):
    backend_raises(
        smtplib.SMTPRecipientsRefused({"user0@example.org": (550, b"5.1.1 no such user")})
    )

    with pytest.raises(PermanentError) as caught:
        run(job, letter())

    assert caught.value.code == "recipient_refused"
    assert "user0@example.org" in caught.value.message


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (smtplib.SMTPRecipientsRefused({"u@example.org": (450, b"mailbox busy")}), "smtp_deferred"),
        (smtplib.SMTPDataError(421, b"try later"), "smtp_deferred"),
        (smtplib.SMTPServerDisconnected("gone"), "smtp_unavailable"),
        (ConnectionRefusedError(111, "Connection refused"), "smtp_unavailable"),
        (TimeoutError("timed out"), "smtp_unavailable"),
    ],
)
def test_email_send_process__server_trouble_is_transient(job, backend_raises, error, code):
    backend_raises(error)

    with pytest.raises(TransientError) as caught:
        run(job, letter())

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (smtplib.SMTPSenderRefused(553, b"not yours", "batches@sender.example"), "sender_refused"),
        (smtplib.SMTPDataError(554, b"spam"), "smtp_rejected"),
    ],
)
def test_email_send_process__rejected_message_is_permanent(job, backend_raises, error, code):
    backend_raises(error)

    with pytest.raises(PermanentError) as caught:
        run(job, letter())

    assert caught.value.code == code


# --- through the engine -------------------------------------------------------------------------


def test_email_send_engine__three_items_send_three_mails(
    account, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            type="email.send",
            items=[{"payload": letter(n)} for n in range(3)],
            commit=True,
        )

    items = list(Item.objects.filter(batch=batch).order_by("index"))
    assert [item.status for item in items] == [Item.Status.SUCCEEDED] * 3
    assert sorted(message.to[0] for message in mailoutbox) == [
        "user0@example.org",
        "user1@example.org",
        "user2@example.org",
    ]
    sent_ids = {message.message()["Message-ID"] for message in mailoutbox}
    assert {item.result["message_id"] for item in items} == sent_ids
    assert len(sent_ids) == 3
    assert [item.result["to"] for item in items] == [[f"user{n}@example.org"] for n in range(3)]


def test_email_send_engine__server_down_is_retried_then_sent(
    account, mailoutbox, backend_raises, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(engine.ItemRunner, "backoff", staticmethod(lambda job_type, n: 0))
    backend_raises(smtplib.SMTPServerDisconnected("gone"), on={1})

    with django_capture_on_commit_callbacks(execute=True):
        batch, _ = services.batch_create(
            account=account,
            actor="test",
            type="email.send",
            items=[{"payload": letter()}],
            commit=True,
        )

    item = Item.objects.get(batch=batch)
    assert item.status == Item.Status.SUCCEEDED
    assert item.attempts == 2
    assert len(mailoutbox) == 1


# --- finalize_send (atomic batches) -------------------------------------------------------------


def test_email_send__is_deferred_in_atomic_batches():
    assert EmailSend.defer_in_atomic is True
    assert isinstance(get_job_type("email.send"), EmailSend)


def test_email_send_finalize_send__sends_every_prepared_message(job, mailoutbox):
    sent = job.finalize_send([letter(n) for n in range(3)])

    assert sent == 3
    assert [message.to for message in mailoutbox] == [[f"user{n}@example.org"] for n in range(3)]


def test_email_send_finalize_send__one_bad_payload_sends_nothing(job, mailoutbox):
    payloads = [letter(0), letter(1, subject="Hi\nBcc: victim@example.org"), letter(2)]

    with pytest.raises(PermanentError) as caught:
        job.finalize_send(payloads)

    assert mailoutbox == []
    assert caught.value.code == "not_prepared"
    assert "[1]" in caught.value.message
    assert "[0]" not in caught.value.message


def test_email_send_finalize_send__nothing_to_send(job, mailoutbox):
    assert job.finalize_send([]) == 0
    assert mailoutbox == []


def test_email_send_finalize_send__server_down_before_the_first_is_transient(
    job, mailoutbox, backend_raises
):
    backend_raises(smtplib.SMTPServerDisconnected("gone"), on={1})

    with pytest.raises(TransientError) as caught:
        job.finalize_send([letter(n) for n in range(3)])

    assert caught.value.code == "smtp_unavailable"
    assert mailoutbox == []


def test_email_send_finalize_send__failure_after_some_were_sent_is_permanent(
    job, mailoutbox, backend_raises
):
    backend_raises(smtplib.SMTPServerDisconnected("gone"), on={2})

    with pytest.raises(PermanentError) as caught:
        job.finalize_send([letter(n) for n in range(3)])

    # Trying again would send the first message twice.
    assert caught.value.code == "partially_sent"
    assert "after 1 of 3" in caught.value.message
    assert len(mailoutbox) == 1


# --- readiness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.mail.backends.locmem.EmailBackend",
        "django.core.mail.backends.console.EmailBackend",
        "django.core.mail.backends.filebased.EmailBackend",
    ],
)
def test_email_send_readiness__backends_that_need_no_server_are_ready(job, settings, backend):
    settings.EMAIL_BACKEND = backend

    assert job.readiness() is None


def test_email_send_readiness__smtp_is_ready_once_a_host_is_named(job, settings, no_mail_server):
    unnamed = job.readiness()
    settings.EMAIL_HOST = "localhost"  # a local MTA, named on purpose

    assert unnamed.startswith("no mail server is configured; set EMAIL_HOST")
    assert job.readiness() is None


def test_email_send_readiness__backend_that_cannot_be_imported(job, settings):
    settings.EMAIL_BACKEND = "no.such.Backend"

    assert (
        job.readiness() == "EMAIL_BACKEND 'no.such.Backend' cannot be imported; fix EMAIL_BACKEND"
    )
