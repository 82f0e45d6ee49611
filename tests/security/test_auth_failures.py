"""Failed authentication: bad API keys are counted per client address, on every interface.

Each way of presenting a key is tried: this API's header, BrightLocal's `api-key` query and
form parameter, Centrapay's `X-Api-Key`, DLCS's Basic credentials and Api-Key header, and
the signing dialect's header. Each answers in its own error shape.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from batches import services
from batches.api.throttling import AuthFailureThrottle
from batches.models import ApiKey, Batch
from tests.security.test_security import (
    BATCHES,
    BRIGHTLOCAL,
    CENTRAPAY_TYPES,
    NOW,
    SIGNING_STATUS,
    assert_refused_in_dialect_shape,
)

LIMIT = 3
HOME = "10.0.0.1"
ELSEWHERE = "10.0.0.2"
WAYS = [
    "api",
    "brightlocal-query",
    "brightlocal-form",
    "centrapay",
    "dlcs-basic",
    "dlcs-header",
    "signing",
]


def interface_of(way: str) -> str:
    """Return the interface whose error shape `way` answers in."""
    return way.partition("-")[0]


def present(way: str, raw: str, account, *, address: str = HOME, **extra):
    """Make one request presenting `raw` the way `way` does, from `address`."""
    client = APIClient(REMOTE_ADDR=address)
    if way == "api":
        return client.get(BATCHES, HTTP_AUTHORIZATION=f"Api-Key {raw}", **extra)
    if way == "brightlocal-query":
        return client.get(BRIGHTLOCAL, {"api-key": raw, "batch-id": "999999"}, **extra)
    if way == "brightlocal-form":
        # Creates a batch when the key is good: the refusals must create none.
        return client.post(BRIGHTLOCAL, {"api-key": raw}, **extra)
    if way == "centrapay":
        return client.get(CENTRAPAY_TYPES, HTTP_X_API_KEY=raw, **extra)
    path = f"/compat/dlcs/customers/{account.number}/queue/batches"
    if way == "dlcs-basic":
        prefix, _, secret = raw.partition(".")
        basic = base64.b64encode(f"{prefix}:{secret}".encode()).decode()
        return client.get(path, HTTP_AUTHORIZATION=f"Basic {basic}", **extra)
    if way == "dlcs-header":
        return client.get(path, HTTP_AUTHORIZATION=f"Api-Key {raw}", **extra)
    return client.get(SIGNING_STATUS, HTTP_AUTHORIZATION=f"Api-Key {raw}", **extra)


def bad_key(raw: str, n: int = 0) -> str:
    """Return a guess at `raw`: its real prefix, a wrong secret."""
    return f"{raw.partition('.')[0]}.{'x' * 31}{n % 10}"


def assert_let_in(response) -> None:
    """Assert the key was accepted: whatever the answer, it is not a refusal of the caller."""
    assert response.status_code not in (401, 403, 429), response.content


@pytest.fixture
def failures(settings, monkeypatch):
    """Allow LIMIT bad keys a minute per address, on a frozen clock, with no failures counted."""
    settings.BATCHSITE_AUTH_FAILURES_PER_MINUTE = LIMIT
    monkeypatch.setattr(AuthFailureThrottle, "timer", staticmethod(lambda: NOW))
    cache.clear()
    yield settings
    cache.clear()


@pytest.fixture
def raw_key(account) -> str:
    _, raw = services.api_key_create(account=account, name="auth-failures")
    return raw


def use_up(way: str, raw: str, account, *, address: str = HOME) -> None:
    """Present LIMIT bad keys from `address`; each is an ordinary 401."""
    for n in range(LIMIT):
        response = present(way, bad_key(raw, n), account, address=address)
        assert_refused_in_dialect_shape(interface_of(way), response, 401)


@pytest.mark.parametrize("way", WAYS)
def test_auth_failures__a_bad_key_past_the_limit_is_429_with_retry_after(
    failures, way, account, raw_key
):
    use_up(way, raw_key, account)

    response = present(way, bad_key(raw_key, 9), account)

    assert_refused_in_dialect_shape(interface_of(way), response, 429)
    assert response["Retry-After"] == "30"


def test_auth_failures__the_api_answers_the_throttled_problem(failures, account, raw_key):
    use_up("api", raw_key, account)

    response = present("api", raw_key, account)

    body = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert body["code"] == "throttled"
    assert body["type"] == "urn:batchsite:problem:throttled"
    assert "invalid API keys from this address" in body["detail"]


def test_auth_failures__brightlocal_names_the_refusal_throttled(failures, account, raw_key):
    use_up("brightlocal-query", raw_key, account)

    response = present("brightlocal-query", raw_key, account)

    assert list(response.json()["errors"]) == ["THROTTLED"]


@pytest.mark.parametrize("way", WAYS)
def test_auth_failures__a_valid_key_from_that_address_is_refused_too_and_changes_nothing(
    failures, way, account, raw_key
):
    use_up(way, raw_key, account)

    response = present(way, raw_key, account)

    assert_refused_in_dialect_shape(interface_of(way), response, 429)
    assert not Batch.objects.exists()
    assert ApiKey.objects.get(prefix=raw_key.partition(".")[0]).last_used_at is None


@pytest.mark.parametrize("way", WAYS)
def test_auth_failures__a_valid_key_from_another_address_still_works(
    failures, way, account, raw_key
):
    use_up(way, raw_key, account)

    assert_let_in(present(way, raw_key, account, address=ELSEWHERE))


def test_auth_failures__another_address_has_its_own_count(failures, account, raw_key):
    use_up("api", raw_key, account)

    response = present("api", bad_key(raw_key), account, address=ELSEWHERE)

    assert_refused_in_dialect_shape("api", response, 401)


def test_auth_failures__every_way_of_presenting_a_key_shares_the_address_count(
    failures, account, raw_key
):
    for way in ("api", "brightlocal-query", "dlcs-basic"):
        assert present(way, bad_key(raw_key), account).status_code == 401

    response = present("centrapay", raw_key, account)

    assert_refused_in_dialect_shape("centrapay", response, 429)


def test_auth_failures__the_address_is_let_in_again_when_the_minute_ends(
    failures, monkeypatch, account, raw_key
):
    use_up("api", raw_key, account)
    assert present("api", raw_key, account).status_code == 429
    monkeypatch.setattr(AuthFailureThrottle, "timer", staticmethod(lambda: NOW + 30))

    assert present("api", raw_key, account).status_code == 200


def test_auth_failures__valid_keys_and_requests_without_one_do_not_count(
    failures, account, raw_key
):
    for _ in range(LIMIT + 2):
        assert present("api", raw_key, account).status_code == 200
        assert APIClient(REMOTE_ADDR=HOME).get(BATCHES).status_code == 401

    assert present("api", bad_key(raw_key), account).status_code == 401


def test_auth_failures__an_expired_key_is_not_counted_as_a_guess(failures, account):
    key, raw = services.api_key_create(account=account, name="expired")
    ApiKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))

    statuses = {present("api", raw, account).status_code for _ in range(LIMIT + 2)}

    assert statuses == {401}


def test_auth_failures__a_revoked_key_counts(failures, account):
    key, raw = services.api_key_create(account=account, name="revoked")
    services.api_key_revoke(key=key)

    statuses = [present("api", raw, account).status_code for _ in range(LIMIT + 1)]

    assert statuses == [401] * LIMIT + [429]


def test_auth_failures__staff_sessions_from_that_address_are_unaffected(
    failures, staff_user, account, raw_key
):
    use_up("api", raw_key, account)
    client = APIClient(REMOTE_ADDR=HOME)
    client.force_login(staff_user)

    assert client.get(BATCHES).status_code == 200


def test_auth_failures__forwarded_for_is_ignored_unless_behind_a_proxy(failures, account, raw_key):
    for n in range(LIMIT):
        present("api", bad_key(raw_key), account, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    response = present("api", raw_key, account, HTTP_X_FORWARDED_FOR="192.0.2.99")

    assert response.status_code == 429


def test_auth_failures__behind_a_proxy_the_address_it_added_counts(failures, account, raw_key):
    failures.BATCHSITE_BEHIND_PROXY = True
    proxy = "10.0.0.254"
    for _ in range(LIMIT):
        present(
            "api",
            bad_key(raw_key),
            account,
            address=proxy,
            HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.1",
        )

    # A client-supplied first entry does not buy a fresh count; another client is not blamed.
    spoofed = present(
        "api", raw_key, account, address=proxy, HTTP_X_FORWARDED_FOR="7.7.7.7, 192.0.2.1"
    )
    other = present("api", raw_key, account, address=proxy, HTTP_X_FORWARDED_FOR="192.0.2.2")

    assert spoofed.status_code == 429
    assert other.status_code == 200


@pytest.mark.parametrize("way", ["api", "brightlocal-query", "dlcs-basic"])
def test_auth_failures__0_turns_it_off(failures, way, account, raw_key):
    failures.BATCHSITE_AUTH_FAILURES_PER_MINUTE = 0

    statuses = {present(way, bad_key(raw_key), account).status_code for _ in range(LIMIT * 3)}

    assert statuses == {401}
    assert_let_in(present(way, raw_key, account))
