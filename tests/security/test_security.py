"""Security: throttling per key, key expiry and revocation, deploy settings, body limits, 500s.

Every interface a key works on (this API and the four dialects) is checked, since each
presents keys and answers errors its own way.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from batches import services
from batches.api.problems import problem_exception_handler
from batches.api.throttling import ApiKeyRateThrottle
from batches.models import ApiKey
from tests.conftest import ROOT
from tests.factories import open_batch
from tests.helpers.api import assert_problem, problem_content

API = "/api/v1"
BATCHES = f"{API}/batches/"
PROBLEM = "application/problem+json"
BRIGHTLOCAL = "/compat/brightlocal/seo-tools/api/v4/batch"
CENTRAPAY_TYPES = "/compat/centrapay/api/batch-types"
SIGNING_STATUS = "/compat/signing/api/BatchStatus/999999"
INTERFACES = ["api", "brightlocal", "centrapay", "dlcs", "signing"]
# A frozen clock 30 seconds into a one-minute window, so Retry-After is exactly 30.
NOW = 1_700_000_010.0
INTERNALS = (b"SELECT", b"secret", b"Traceback", b'File "')


def call(interface: str, raw: str, account, client: APIClient | None = None):
    """Make one harmless read with `raw` the way `interface` expects its key."""
    client = client or APIClient()
    if interface == "api":
        return client.get(BATCHES, HTTP_AUTHORIZATION=f"Api-Key {raw}")
    if interface == "brightlocal":
        return client.get(BRIGHTLOCAL, {"api-key": raw, "batch-id": "999999"})
    if interface == "centrapay":
        return client.get(CENTRAPAY_TYPES, HTTP_X_API_KEY=raw)
    if interface == "dlcs":
        path = f"/compat/dlcs/customers/{account.number}/queue/batches"
        return client.get(path, HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client.get(SIGNING_STATUS, HTTP_AUTHORIZATION=f"Api-Key {raw}")


def assert_refused_in_dialect_shape(interface: str, response, status: int) -> None:
    """Assert `response` is the interface's own error body with `status`."""
    assert response.status_code == status, response.content
    body = response.json()
    if interface == "api":
        assert response["Content-Type"] == PROBLEM
        assert body["status"] == status
    elif interface == "brightlocal":
        assert body["success"] is False
        assert isinstance(body["errors"], dict)
        assert body["errors"]
    elif interface == "centrapay":
        assert list(body) == ["message"]
    elif interface == "dlcs":
        assert body["@type"] == "Error"
        assert body["statusCode"] == status
    else:
        assert list(body) == ["error"]


@pytest.fixture
def raw_key(account) -> str:
    _, raw = services.api_key_create(account=account, name="security")
    return raw


# --- throttling ----------------------------------------------------------------------------------


@pytest.fixture
def throttle(settings, monkeypatch):
    """Allow two requests a minute, on a frozen clock, with empty buckets."""
    settings.BATCHSITE_THROTTLE_RATE = "2/min"
    monkeypatch.setattr(ApiKeyRateThrottle, "timer", staticmethod(lambda: NOW))
    cache.clear()
    yield settings
    cache.clear()


def test_throttle__key_over_the_rate_is_429_throttled_with_retry_after(throttle, client_a):
    assert client_a.get(BATCHES).status_code == 200
    assert client_a.get(BATCHES).status_code == 200

    response = client_a.get(BATCHES)

    body = assert_problem(response, 429, "throttled")
    assert body["type"] == "urn:batchsite:problem:throttled"
    assert response["Retry-After"] == "30"


def test_throttle__each_key_has_its_own_budget(throttle, account, client_a):
    for _ in range(2):
        client_a.get(BATCHES)
    assert client_a.get(BATCHES).status_code == 429
    _, other_raw = services.api_key_create(account=account, name="second")

    response = call("api", other_raw, account)

    assert response.status_code == 200


def test_throttle__keys_of_other_accounts_are_not_affected(throttle, client_a, client_b):
    for _ in range(3):
        client_a.get(BATCHES)

    assert client_b.get(BATCHES).status_code == 200
    assert client_a.get(BATCHES).status_code == 429


def test_throttle__budget_returns_in_the_next_window(throttle, monkeypatch, client_a):
    for _ in range(3):
        client_a.get(BATCHES)
    monkeypatch.setattr(ApiKeyRateThrottle, "timer", staticmethod(lambda: NOW + 60))

    assert client_a.get(BATCHES).status_code == 200


@pytest.mark.parametrize("interface", INTERFACES[1:])
def test_throttle__dialect_answers_429_in_its_own_shape_with_retry_after(
    throttle, interface, account, raw_key
):
    throttle.BATCHSITE_THROTTLE_RATE = "1/min"
    assert call(interface, raw_key, account).status_code != 429

    response = call(interface, raw_key, account)

    assert_refused_in_dialect_shape(interface, response, 429)
    assert response["Retry-After"] == "30"


def test_throttle__brightlocal_names_the_refusal_throttled(throttle, account, raw_key):
    throttle.BATCHSITE_THROTTLE_RATE = "1/min"
    call("brightlocal", raw_key, account)

    response = call("brightlocal", raw_key, account)

    assert list(response.json()["errors"]) == ["THROTTLED"]


def test_throttle__a_key_has_one_budget_across_the_api_and_the_dialects(throttle, account, raw_key):
    assert call("api", raw_key, account).status_code == 200
    assert call("centrapay", raw_key, account).status_code == 200

    response = call("dlcs", raw_key, account)

    assert_refused_in_dialect_shape("dlcs", response, 429)


def test_throttle__staff_sessions_are_counted_per_user(throttle, staff_client):
    for _ in range(2):
        assert staff_client.get(BATCHES).status_code == 200
    assert_problem(staff_client.get(BATCHES), 429, "throttled")
    other = get_user_model().objects.create_user("other-staff", password="pw", is_staff=True)
    other_client = APIClient()
    other_client.force_login(other)

    assert other_client.get(BATCHES).status_code == 200


def test_throttle__anonymous_callers_are_counted_per_address(throttle):
    client = APIClient()
    nowhere = f"{API}/nowhere/"
    for _ in range(2):
        assert client.get(nowhere, REMOTE_ADDR="10.0.0.1").status_code == 404

    assert_problem(client.get(nowhere, REMOTE_ADDR="10.0.0.1"), 429, "throttled")
    assert client.get(nowhere, REMOTE_ADDR="10.0.0.2").status_code == 404


def test_throttle__forwarded_for_is_ignored_unless_behind_a_proxy(throttle):
    client = APIClient()
    nowhere = f"{API}/nowhere/"
    for n in range(2):
        client.get(nowhere, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    response = client.get(nowhere, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.99")

    assert_problem(response, 429, "throttled")


def test_throttle__behind_a_proxy_the_address_it_added_counts(throttle):
    throttle.BATCHSITE_BEHIND_PROXY = True
    client = APIClient()
    nowhere = f"{API}/nowhere/"
    proxy = {"REMOTE_ADDR": "10.0.0.254"}
    for _ in range(2):
        client.get(nowhere, HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.1", **proxy)

    # A client-supplied first entry does not buy a fresh budget; another client does.
    spoofed = client.get(nowhere, HTTP_X_FORWARDED_FOR="7.7.7.7, 192.0.2.1", **proxy)
    other = client.get(nowhere, HTTP_X_FORWARDED_FOR="192.0.2.2", **proxy)

    assert_problem(spoofed, 429, "throttled")
    assert other.status_code == 404


@pytest.mark.parametrize("rate", ["0", ""])
def test_throttle__rate_0_or_empty_turns_it_off(throttle, client_a, rate):
    throttle.BATCHSITE_THROTTLE_RATE = rate

    statuses = {client_a.get(BATCHES).status_code for _ in range(5)}

    assert statuses == {200}


# --- keys: expiry, revocation, last use ----------------------------------------------------------


@pytest.mark.parametrize("interface", INTERFACES)
def test_api_key__revocation_is_effective_on_the_next_request(interface, account):
    key, raw = services.api_key_create(account=account, name="revoked")
    assert call(interface, raw, account).status_code in (200, 404)

    services.api_key_revoke(key=key)
    response = call(interface, raw, account)

    assert_refused_in_dialect_shape(interface, response, 401)


@pytest.mark.parametrize("interface", INTERFACES)
def test_api_key__expired_key_is_401(interface, account):
    key, raw = services.api_key_create(account=account, name="expired")
    ApiKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))

    response = call(interface, raw, account)

    assert_refused_in_dialect_shape(interface, response, 401)


def test_api_key__key_with_a_future_expiry_works(account):
    key, raw = services.api_key_create(account=account, name="expiring")
    ApiKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() + timedelta(days=1))

    assert call("api", raw, account).status_code == 200


@pytest.mark.parametrize("interface", INTERFACES)
def test_api_key__use_records_last_used_at(interface, account):
    key, raw = services.api_key_create(account=account, name="used")
    before = timezone.now()

    call(interface, raw, account)

    key.refresh_from_db()
    assert key.last_used_at is not None
    assert key.last_used_at >= before


def test_api_key__only_its_hash_is_stored(account):
    key, raw = services.api_key_create(account=account, name="hashed")

    stored = ApiKey.objects.filter(pk=key.pk).values_list("hashed_key", flat=True).get()

    assert raw.partition(".")[2] not in stored
    assert key.is_valid(raw)


# --- deploy settings -----------------------------------------------------------------------------

PRODUCTION = {
    "DJANGO_ALLOWED_HOSTS": "batchsite.example",
    "BATCHSITE_HSTS_SECONDS": "31536000",
    "BATCHSITE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "BATCHSITE_HSTS_PRELOAD": "1",
    "BATCHSITE_SECURE_COOKIES": "1",
    "BATCHSITE_SSL_REDIRECT": "1",
}

# Ask a freshly configured process what it would do with a few requests.
PROBE = """
import json

import django
from django.conf import settings
from django.test import Client

django.setup()
client = Client(HTTP_HOST="batchsite.example")


def probe(path, **extra):
    response = client.get(path, **extra)
    return {
        "status": response.status_code,
        "location": response.get("Location"),
        "hsts": response.get("Strict-Transport-Security"),
    }


names = (
    "DEBUG", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER", "CSRF_TRUSTED_ORIGINS",
)
print(json.dumps({
    "settings": {name: getattr(settings, name) for name in names},
    "api": probe("/api/v1/job-types/"),
    "healthz": probe("/healthz/"),
    # A kubelet's probe: plain http, the pod's address as Host, maybe no trailing slash.
    "probes_by_address": [
        probe(path, HTTP_HOST="10.42.7.19:8000") for path in ("/healthz", "/readyz/", "/readyz")
    ],
    "secure": probe("/healthz/", secure=True),
    "proxied": probe("/healthz/", HTTP_X_FORWARDED_PROTO="https"),
}))
"""


def run_django(tmp_path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run Python in a fresh process on the real settings, with only the given configuration."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "BATCHSITE_")) and name != "DATABASE_URL"
    }
    clean.update(
        DJANGO_SETTINGS_MODULE="batchsite.settings",
        BATCHSITE_DATA_DIR=str(tmp_path),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        **env,
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_deploy(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Run `manage.py check --deploy --fail-level WARNING` with this configuration."""
    command = ["manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return run_django(tmp_path, command, **env)


def probe(tmp_path, **env: str) -> dict:
    """Return the PROBE's report for this configuration."""
    result = run_django(tmp_path, ["-c", PROBE], **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_check_deploy__clean_with_the_production_environment(tmp_path):
    result = check_deploy(tmp_path, **PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_check_deploy__defaults_warn_about_what_https_needs(tmp_path):
    result = check_deploy(tmp_path)

    assert result.returncode != 0
    found = {
        code for code in ("W004", "W008", "W012", "W016") if f"security.{code}" in result.stderr
    }
    assert found == {"W004", "W008", "W012", "W016"}, result.stderr
    assert "4 issues" in result.stderr


@pytest.mark.slow
def test_check_deploy__hsts_without_subdomains_and_preload_still_warns(tmp_path):
    env = {**PRODUCTION, "BATCHSITE_HSTS_INCLUDE_SUBDOMAINS": "0", "BATCHSITE_HSTS_PRELOAD": "0"}

    result = check_deploy(tmp_path, **env)

    assert result.returncode != 0
    assert "security.W005" in result.stderr
    assert "security.W021" in result.stderr


@pytest.mark.slow
def test_check_deploy__an_operator_may_silence_a_check(tmp_path):
    env = {
        **PRODUCTION,
        "BATCHSITE_SSL_REDIRECT": "0",
        "BATCHSITE_SILENCED_CHECKS": "security.W008",
    }

    result = check_deploy(tmp_path, **env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 silenced" in result.stdout


@pytest.mark.slow
def test_settings__bad_throttle_rate_fails_at_startup(tmp_path):
    result = check_deploy(tmp_path, **PRODUCTION, BATCHSITE_THROTTLE_RATE="lots")

    assert result.returncode != 0
    assert "BATCHSITE_THROTTLE_RATE" in result.stderr


@pytest.mark.slow
def test_production__redirects_to_https_and_sends_hsts(tmp_path):
    report = probe(tmp_path, **PRODUCTION)

    assert report["settings"]["SESSION_COOKIE_SECURE"] is True
    assert report["settings"]["CSRF_COOKIE_SECURE"] is True
    assert report["api"]["status"] == 301
    assert report["api"]["location"] == "https://batchsite.example/api/v1/job-types/"
    assert report["secure"]["hsts"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.slow
def test_production__health_probes_are_not_redirected(tmp_path):
    report = probe(tmp_path, **PRODUCTION)

    assert report["healthz"]["status"] == 200
    for answer in report["probes_by_address"]:
        assert answer["status"] == 200, answer
        assert answer["location"] is None


@pytest.mark.slow
def test_production__behind_a_proxy_its_https_header_counts(tmp_path):
    plain = probe(tmp_path, **PRODUCTION)
    proxied = probe(tmp_path, **PRODUCTION, BATCHSITE_BEHIND_PROXY="1")

    assert plain["proxied"]["hsts"] is None
    assert proxied["proxied"]["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert proxied["settings"]["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.slow
def test_production__csrf_trusted_origins_come_from_the_environment(tmp_path):
    origins = "https://batchsite.example,https://ops.example"

    report = probe(tmp_path, **PRODUCTION, DJANGO_CSRF_TRUSTED_ORIGINS=origins)

    assert report["settings"]["CSRF_TRUSTED_ORIGINS"] == origins.split(",")


@pytest.mark.slow
def test_debug__never_forces_https(tmp_path):
    report = probe(tmp_path, **PRODUCTION, DJANGO_DEBUG="1")

    assert report["settings"]["DEBUG"] is True
    assert report["settings"]["SECURE_SSL_REDIRECT"] is False
    assert report["settings"]["SESSION_COOKIE_SECURE"] is False
    assert report["settings"]["CSRF_COOKIE_SECURE"] is False
    assert report["settings"]["SECURE_HSTS_SECONDS"] == 0
    assert report["api"]["status"] != 301
    assert report["secure"]["hsts"] is None


@pytest.mark.slow
def test_defaults__plain_http_works(tmp_path):
    report = probe(tmp_path, DJANGO_ALLOWED_HOSTS="batchsite.example")

    assert report["settings"]["SECURE_SSL_REDIRECT"] is False
    assert report["settings"]["SESSION_COOKIE_SECURE"] is False
    assert report["api"]["status"] == 401


# --- request body size ---------------------------------------------------------------------------


def items_url(batch) -> str:
    return f"{BATCHES}{batch.id}/items/"


def test_body_limit__json_body_over_the_limit_is_413_too_large(settings, client_a, account):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    batch = open_batch(account=account, items=1)
    items = [{"payload": {"text": "x" * 100}} for _ in range(40)]

    response = client_a.post(items_url(batch), items, format="json")

    body = assert_problem(response, 413, "too_large")
    assert "2048" in body["detail"]
    assert batch.items.count() == 1


def test_body_limit__json_body_under_the_limit_is_accepted(settings, client_a, account):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    batch = open_batch(account=account, items=1)
    items = [{"payload": {"text": "x" * 100}} for _ in range(10)]

    response = client_a.post(items_url(batch), items, format="json")

    assert response.status_code == 201, response.content
    assert batch.items.count() == 11


def test_body_limit__multipart_fields_over_the_limit_are_413(settings, client_a, account):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    batch = open_batch(account=account, items=1)
    payload = json.dumps({"text": "x" * 4096})

    response = client_a.post(
        items_url(batch), {"payload": payload, "external_id": "big"}, format="multipart"
    )

    assert_problem(response, 413, "too_large")
    assert batch.items.count() == 1


def test_body_limit__too_many_form_fields_is_413(settings, client_a, account):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 3
    batch = open_batch(account=account, items=1)
    fields = {f"field{n}": "x" for n in range(10)}

    response = client_a.post(items_url(batch), fields, format="multipart")

    assert_problem(response, 413, "too_large")


# --- no internals in error bodies ----------------------------------------------------------------

SERVER_ERROR = {
    "type": "urn:batchsite:problem:server_error",
    "title": "Server error",
    "status": 500,
    "detail": "The server failed to handle this request.",
    "code": "server_error",
}


def crash(*args, **kwargs):
    raise RuntimeError("SELECT secret FROM x")


def test_server_error__crash_in_a_view_is_a_bare_500_problem(
    monkeypatch, client_a, account, caplog
):
    monkeypatch.setattr(services, "items_add", crash)
    batch = open_batch(account=account, items=1)

    response = client_a.post(items_url(batch), {"payload": {}}, format="json")

    assert_problem(response, 500, "server_error")
    assert problem_content(response) == SERVER_ERROR
    for internal in INTERNALS:
        assert internal not in response.content
    logged = [r for r in caplog.records if r.exc_info and "SELECT secret" in str(r.exc_info[1])]
    assert logged, "the crash must be logged with its traceback"


def test_server_error__database_error_text_stays_out_of_the_body(monkeypatch, client_a):
    def broken_registry():
        raise OperationalError('no such column: secret."SELECT"')

    monkeypatch.setattr("batches.api.views.job_types", broken_registry)

    response = client_a.get(f"{API}/job-types/")

    assert problem_content(response) == SERVER_ERROR
    for internal in INTERNALS:
        assert internal not in response.content


@pytest.mark.parametrize("interface", INTERFACES)
def test_server_error__no_interface_shows_internals(monkeypatch, interface, account, raw_key):
    monkeypatch.setattr(ApiKey, "is_valid", crash)
    client = APIClient(raise_request_exception=False)

    response = call(interface, raw_key, account, client=client)

    assert response.status_code == 500
    for internal in INTERNALS:
        assert internal not in response.content
    if interface == "api":
        assert problem_content(response) == SERVER_ERROR


def test_server_error__with_debug_on_the_crash_is_left_to_django(settings):
    settings.DEBUG = True

    assert problem_exception_handler(RuntimeError("boom"), {}) is None


def test_server_error__with_debug_off_the_handler_answers(settings):
    settings.DEBUG = False

    response = problem_exception_handler(RuntimeError("SELECT secret FROM x"), {})

    assert response.status_code == 500
    assert response.data == SERVER_ERROR
