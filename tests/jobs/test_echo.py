"""Tests for the built-in `echo` job type."""

from __future__ import annotations

import time

import pytest

from jobs import JobContext, PermanentError, TransientError
from jobs.base import PayloadError
from jobs.echo import MAX_SLEEP_MS, Echo


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record every time.sleep call, and still sleep (the tests ask only for milliseconds)."""
    calls: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds):
        calls.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("jobs.echo.time.sleep", sleep)
    return calls


def run(echo: Echo, payload: dict, attempt: int = 1):
    return echo.process(payload, None, JobContext(attempt=attempt, label="test#0"))


# --- payload_check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"anything": ["goes", 1, None]},
        {"fail": True},
        {"fail": False},
        {"sleep_ms": 0},
        {"sleep_ms": MAX_SLEEP_MS},
        {"transient_failures": 0},
        {"transient_failures": 1000},
        {"fail": False, "sleep_ms": 5, "transient_failures": 2, "text": "hello"},
    ],
)
def test_echo_validate_payload__accepts(echo, payload):
    assert echo.payload_check(payload) is None


@pytest.mark.parametrize("payload", [None, [], ["fail"], "text", 3, True])
def test_echo_validate_payload__refuses_a_non_object(echo, payload):
    with pytest.raises(PayloadError) as caught:
        echo.payload_check(payload)

    assert caught.value.errors == {"payload": "must be a JSON object"}


@pytest.mark.parametrize("value", ["yes", 1, 0, None, "true"])
def test_echo_validate_payload__refuses_a_non_boolean_fail(echo, value):
    with pytest.raises(PayloadError) as caught:
        echo.payload_check({"fail": value})

    assert caught.value.errors == {"payload.fail": "must be true or false"}


@pytest.mark.parametrize("field", ["sleep_ms", "transient_failures"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be at least 0"),
        (1.5, "must be an integer"),
        ("10", "must be an integer"),
        (True, "must be an integer"),
        (False, "must be an integer"),
        (None, "must be an integer"),
        ([1], "must be an integer"),
    ],
)
def test_echo_validate_payload__refuses_a_bad_count(echo, field, value, message):
    with pytest.raises(PayloadError) as caught:
        echo.payload_check({field: value})

    assert caught.value.errors == {f"payload.{field}": message}


def test_echo_validate_payload__refuses_a_sleep_over_the_maximum(echo):
    with pytest.raises(PayloadError) as caught:
        echo.payload_check({"sleep_ms": MAX_SLEEP_MS + 1})

    assert caught.value.errors == {"payload.sleep_ms": f"must be at most {MAX_SLEEP_MS}"}


def test_echo_validate_payload__reports_every_bad_field(echo):
    with pytest.raises(PayloadError) as caught:
        echo.payload_check({"fail": "no", "sleep_ms": -5, "transient_failures": "x"})

    assert set(caught.value.errors) == {
        "payload.fail",
        "payload.sleep_ms",
        "payload.transient_failures",
    }
    assert "payload.fail: must be true or false" in str(caught.value)


# --- process ------------------------------------------------------------------------------------


def test_echo_process__returns_the_payload(echo, sleeps):
    payload = {"text": "hello", "nested": {"list": [1, 2, 3]}, "fail": False}

    assert run(echo, payload) == payload
    assert sleeps == []


def test_echo_process__sleeps_as_asked(echo, sleeps):
    assert run(echo, {"sleep_ms": 5, "n": 1}) == {"sleep_ms": 5, "n": 1}

    assert sleeps == [0.005]


def test_echo_process__zero_sleep_does_not_sleep(echo, sleeps):
    run(echo, {"sleep_ms": 0})

    assert sleeps == []


def test_echo_process__fails_transiently_then_succeeds(echo):
    payload = {"transient_failures": 2, "v": "x"}

    for attempt in (1, 2):
        with pytest.raises(TransientError) as caught:
            run(echo, payload, attempt=attempt)
        assert caught.value.code == "transient"
        assert f"transient failure {attempt}" in caught.value.message

    assert run(echo, payload, attempt=3) == payload


def test_echo_process__fails_permanently_with_echo_failed(echo):
    for attempt in (1, 4):
        with pytest.raises(PermanentError) as caught:
            run(echo, {"fail": True}, attempt=attempt)
        assert caught.value.code == "echo_failed"
        assert caught.value.message == "the payload asked echo to fail"


def test_echo_process__transient_failures_come_before_a_permanent_one(echo):
    payload = {"transient_failures": 1, "fail": True}

    with pytest.raises(TransientError):
        run(echo, payload, attempt=1)
    with pytest.raises(PermanentError):
        run(echo, payload, attempt=2)


def test_echo_describe__is_the_public_description(echo):
    described = echo.describe()

    assert described["name"] == "echo"
    assert described["accepts_file"] is False
    assert set(described["payload_schema"]["properties"]) == {
        "fail",
        "sleep_ms",
        "transient_failures",
        "time_limit",
    }
    assert "fail" in described["description"]
