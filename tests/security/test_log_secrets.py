"""No log line shows a raw API key or a webhook secret, however a key was presented or made.

Requests go through a real HTTP server running Django's development server handler (what
`manage.py runserver` and `make run` use, which logs every request line), presenting keys
every way an interface reads them, good and bad. Keys and secrets are also made through the
API, the dashboard and the commands. Every logger is set to DEBUG and every record any
logger hands to its handlers is kept, whether or not it propagates to the root, then its
message, arguments, extras and traceback are searched for the secrets.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.db import connections
from django.test import Client

from batches import services
from batchsite.logging import JsonFormatter, SecretsFilter, secrets_redact
from tests.security.test_auth_failures import bad_key

pytestmark = pytest.mark.django_db(transaction=True)

BRIGHTLOCAL = "/compat/brightlocal/seo-tools/api/v4/batch"
CENTRAPAY = "/compat/centrapay/api"
SIGNING = "/compat/signing/api"
# The test's own HTTP client logs the URLs it requests; the project's uses of httpx
# (webhooks, sources, http.request) never send a batchsite key.
TEST_CLIENT_LOGGERS = ("httpx", "httpcore")


class DevServer(ThreadedWSGIServer):
    """The development server's own classes, serving the project's WSGI app on a free port."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), WSGIRequestHandler, allow_reuse_address=False)
        # The handler itself: get_wsgi_application() would set Django up again, which
        # configures logging anew and undoes the DEBUG levels the test set.
        self.set_app(WSGIHandler())
        self.daemon_threads = True

    def process_request_thread(self, request, client_address):
        """Serve one connection, then close the thread's database connections."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            connections.close_all()


@pytest.fixture
def server() -> Iterator[str]:
    """Run the development server in a thread; return its base URL."""
    dev = DevServer()
    thread = threading.Thread(target=dev.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{dev.server_port}"
    dev.shutdown()
    dev.server_close()
    thread.join(timeout=10)


@pytest.fixture
def records(monkeypatch) -> list[logging.LogRecord]:
    """Set every logger to DEBUG and keep every record any of them hands to its handlers."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    kept: list[logging.LogRecord] = []
    call_handlers = logging.Logger.callHandlers

    def keep(self, record):
        kept.append(record)
        call_handlers(self, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", keep)
    yield kept
    for logger, level in levels.items():
        logger.setLevel(level)


def record_texts(record: logging.LogRecord) -> list[str]:
    """Return everything of a record a handler could print."""
    texts = [str(record.msg), repr(record.args), JsonFormatter().format(record)]
    with contextlib.suppress(TypeError, ValueError):
        texts.append(record.getMessage())
    standard = logging.makeLogRecord({}).__dict__
    for name, value in vars(record).items():
        if name not in standard and name not in ("request", "message", "asctime"):
            texts.append(f"{name}={value!r}")
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    return texts


def secret_parts(raw_key: str) -> list[str]:
    """Return what of a raw key must not be logged: the key, and the part after its prefix."""
    return [raw_key, raw_key.partition(".")[2]]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def present_every_way(http: httpx.Client, raw: str, account) -> None:
    """Present `raw` every way an interface reads a key, with reads and writes."""
    prefix, _, secret = raw.partition(".")
    api_key = {"Authorization": f"Api-Key {raw}"}
    http.get("/api/v1/batches/", headers=api_key)
    http.post("/api/v1/batches/", headers=api_key, json={"items": [{"payload": {"n": 1}}]})
    http.get("/api/v1/batches/", headers={"Authorization": f"Api-Key {raw} extra"})
    http.get(BRIGHTLOCAL, params={"api-key": raw, "batch-id": "999999"})
    http.post(BRIGHTLOCAL, params={"api-key": raw, "stop-on-job-error": "1"})
    http.post(BRIGHTLOCAL, data={"api-key": raw})
    http.post(BRIGHTLOCAL, json={"api-key": raw})
    http.put(BRIGHTLOCAL, params={"api-key": raw, "batch-id": "999999"})
    http.delete(BRIGHTLOCAL, params={"api-key": raw, "batch-id": "999999"})
    http.get(f"{BRIGHTLOCAL}/nowhere", params={"api-key": raw})
    http.get(f"{CENTRAPAY}/batch-types", headers={"X-Api-Key": raw})
    http.post(
        f"{CENTRAPAY}/batches",
        headers={"X-Api-Key": raw},
        json={"type": "echo", "url": "https://nowhere.invalid/x.jsonl", "accountId": "0"},
    )
    dlcs = f"/compat/dlcs/customers/{account.number}/queue/batches"
    http.get(dlcs, headers={"Authorization": basic(prefix, secret)})
    http.get(dlcs, headers={"Authorization": basic("anyone", raw)})
    http.get(dlcs, headers=api_key)
    http.get(f"{SIGNING}/BatchStatus/999999", headers=api_key)
    http.post(f"{SIGNING}/AcceptBatch/999999", headers=api_key)


@pytest.fixture
def secrets_made(account, server, staff_user) -> list[str]:
    """Make keys and webhook secrets every way there is; return every secret to look for."""
    found: list[str] = []
    _, raw = services.api_key_create(account=account, name="service")
    found += secret_parts(raw)

    out = io.StringIO()
    call_command("createapikey", account.name, stdout=out, stderr=io.StringIO())
    command_key = out.getvalue().strip().splitlines()[-1]
    found += secret_parts(command_key)
    out = io.StringIO()
    call_command("rotatewebhooksecret", account.name, stdout=out, stderr=io.StringIO())
    found.append(out.getvalue().strip().splitlines()[-1])

    with httpx.Client(base_url=server) as http:
        api_secret = http.post(
            "/api/v1/account/webhook-secret/", headers={"Authorization": f"Api-Key {raw}"}
        )
        assert api_secret.status_code == 201, api_secret.text
        found.append(api_secret.json()["secret"])

    # The dashboard, through the same server, with a staff session's cookie.
    session = Client()
    session.force_login(staff_user)
    cookie = session.cookies[django_settings.SESSION_COOKIE_NAME].value
    cookies = {django_settings.SESSION_COOKIE_NAME: cookie}
    with httpx.Client(base_url=server, cookies=cookies) as http:

        def form_post(path: str, data: dict) -> httpx.Response:
            page = http.get(path)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
            answer = http.post(
                path,
                data={**data, "csrfmiddlewaretoken": token},
                headers={"Referer": f"{server}/accounts/"},
            )
            assert answer.status_code == 201, answer.text
            return answer

        created = form_post(f"/accounts/{account.number}/keys/new/", {"name": "dashboard"})
        found += secret_parts(re.search(r'data-testid="raw-key">([^<]+)<', created.text)[1])
        rotated = form_post(f"/accounts/{account.number}/webhook-secret/", {"confirm": "True"})
        found.append(re.search(r"whsec_[A-Za-z0-9_+/=-]+", rotated.text)[0])
    return found


@pytest.fixture
def throttled(settings):
    """Count bad keys per address with a low limit, so refusals past it are logged too."""
    settings.BATCHSITE_AUTH_FAILURES_PER_MINUTE = 3
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(params=[False, True], ids=["production", "debug"])
def debug(request, settings) -> bool:
    """Run with DEBUG off, then on (which also logs every SQL statement at DEBUG)."""
    settings.DEBUG = request.param
    return request.param


@pytest.mark.slow
def test_logs__no_raw_key_or_webhook_secret_in_any_log_record(
    debug, throttled, records, account, other_account, server, secrets_made
):
    keys = [secret for secret in secrets_made if not secret.startswith("whsec_")]
    raw_keys = [key for key in keys if "." in key]
    _, other = services.api_key_create(account=other_account, name="other")
    revoked, revoked_raw = services.api_key_create(account=account, name="revoked")
    services.api_key_revoke(key=revoked)
    secrets = [*secrets_made, *secret_parts(other), *secret_parts(revoked_raw)]

    with httpx.Client(base_url=server) as http:
        for raw in [*raw_keys, other, revoked_raw]:
            present_every_way(http, raw, account)
        for n in range(3):
            present_every_way(http, bad_key(raw_keys[0], n), account)
        # Past the failure limit: refused (429) before the key is even checked.
        present_every_way(http, raw_keys[0], account)
    secrets += [part for n in range(3) for part in secret_parts(bad_key(raw_keys[0], n))]

    assert len(records) > 50, "the requests must have been logged"
    if debug:
        assert any(r.name == "django.db.backends" for r in records), "SQL must be logged"
    leaks = [
        f"{record.name}: {text[:300]}"
        for record in records
        if not record.name.startswith(TEST_CLIENT_LOGGERS)
        for text in record_texts(record)
        if any(secret in text for secret in secrets)
    ]
    assert leaks == []


def test_logs__the_dev_server_logs_the_request_line_without_the_key(records, account, server):
    _, raw = services.api_key_create(account=account, name="brightlocal")

    with httpx.Client(base_url=server) as http:
        http.get(BRIGHTLOCAL, params={"api-key": raw, "batch-id": "7"})

    def logged() -> list[str]:
        return [r.getMessage() for r in records if r.name == "django.server"]

    # The server logs the request line after the client has the answer: wait for it.
    for _ in range(100):
        if any(BRIGHTLOCAL in line and "batch-id=7" in line for line in logged()):
            break
        time.sleep(0.05)
    lines = logged()
    assert any(BRIGHTLOCAL in line and "batch-id=7" in line for line in lines), lines
    assert not any(raw.partition(".")[2] in line for line in lines), lines


def test_logs__the_secrets_looked_for_are_real(account, server, secrets_made):
    """Guard the main test: the secrets it looks for are the ones that work."""
    raw = next(s for s in secrets_made if "." in s and not s.startswith("whsec_"))

    with httpx.Client(base_url=server) as http:
        response = http.get("/api/v1/batches/", headers={"Authorization": f"Api-Key {raw}"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param(
            '"GET /b?api-key=abcdefgh.0123456789abcdefghij0123456789ab&batch-id=7 HTTP/1.1" 200',
            '"GET /b?api-key=[redacted]&batch-id=7 HTTP/1.1" 200',
            id="query-parameter",
        ),
        pytest.param(
            "GET /b?api%2Dkey=abc%2Edef&token=t&q=plumber",
            "GET /b?api%2Dkey=[redacted]&token=[redacted]&q=plumber",
            id="encoded-name-and-other-secret-names",
        ),
        pytest.param(
            "key abcdefgh.0123456789abcdefghij0123456789ab used",
            "key abcdefgh.[redacted] used",
            id="key-anywhere-keeps-its-prefix",
        ),
        pytest.param(
            "UPDATE a SET s = 'whsec_Ab-c_9'; args=('whsec_Ab-c_9',)",
            "UPDATE a SET s = 'whsec_[redacted]'; args=('whsec_[redacted]',)",
            id="webhook-secret",
        ),
        pytest.param(
            "Authorization: Basic dXNlcjpwYXNz, then Api-Key abc.def",
            "Authorization: Basic [redacted], then Api-Key [redacted]",
            id="authorization-values",
        ),
        pytest.param(
            "Not Found: /compat/dlcs/customers/10000/queue/batches/5",
            "Not Found: /compat/dlcs/customers/10000/queue/batches/5",
            id="nothing-secret",
        ),
    ],
)
def test_secrets_redact__blanks_secrets_and_keeps_the_rest(text, shown):
    assert secrets_redact(text) == shown


def test_logs__the_console_prints_no_secret_logged_by_any_logger(account):
    _, raw = services.api_key_create(account=account, name="console")
    console = next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, SecretsFilter) for f in handler.filters)
    )
    printed = io.StringIO()
    stream = console.setStream(printed)
    try:
        logging.getLogger("batches.anything").warning("presented %s", raw)
        logging.getLogger("someone.else").error("header Api-Key %s", raw)
    finally:
        console.setStream(stream)

    assert raw.partition(".")[2] not in printed.getvalue()
    assert printed.getvalue().count("[redacted]") == 2
