"""Payloads are checked against their type's JSON Schema, problems named by JSON path."""

from __future__ import annotations

import pytest
from django.core import checks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from jobs import JobType, job_types, payloads
from jobs.base import PayloadError
from jobs.echo import Echo
from jobs.email_send import EmailSend
from jobs.http_request import HttpRequest
from jobs.image_derive import ImageDerive

pytestmark = pytest.mark.django_db

BUILTIN = ["echo", "http.request", "image.derive", "document.sign", "document.verify", "email.send"]


def problems(job_type, payload) -> dict[str, str]:
    return payloads.payload_problems(job_type, payload)


# --- one verdict from two implementations ------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0, 1, 99, 100, 101, 599, 600, 998, 999, 10_000, 600_000, 600_001]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.text(max_size=6),
    st.sampled_from(["GET", "get", "TRACE", "jpeg", "fill", "fit", "a@b.example", "", "x" * 999]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def near_payloads(draw, job_type: type[JobType]):
    """Draw objects using the schema's own field names, so most checks are reached."""
    properties = list(payloads.payload_schema_of(job_type)["properties"])
    names = draw(st.lists(st.sampled_from([*properties, "surprise"]), unique=True, max_size=5))
    return {name: draw(json_values) for name in names}


@pytest.mark.parametrize("name", BUILTIN)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_payload_problems__the_compiled_check_agrees_with_jsonschema(name, data):
    job_type = type(job_types()[name])
    schema, compiled, _ = payloads._schemas(job_type)
    payload = data.draw(st.one_of(json_values, near_payloads(job_type)))

    try:
        compiled(payload)
        fast_valid = True
    except Exception:
        fast_valid = False

    assert fast_valid == Draft7Validator(schema).is_valid(payload), payload
    assert (problems(job_type, payload) == {}) == fast_valid


# --- what a client is told ----------------------------------------------------------------------


def test_payload_problems__a_fitting_payload_has_none():
    assert problems(Echo, {"fail": False, "sleep_ms": 5, "anything": [1, {"x": None}]}) == {}


def test_payload_problems__every_problem_is_named_by_its_json_path():
    found = problems(
        ImageDerive,
        {"sizes": [[100, 100], [0, 5]], "format": "tiff", "quality": True, "colour": "red"},
    )

    assert found == {
        "payload.colour": "is not a field of this job type",
        "payload.format": 'must be one of "jpeg", "png", "webp"',
        "payload.quality": "must be an integer",
        "payload.sizes[1][0]": "must be at least 1",
    }


def test_payload_problems__a_missing_required_field_is_named():
    assert problems(EmailSend, {"to": "a@b.example"}) == {
        "payload.subject": "is required",
        "payload.text": "is required",
    }


def test_payload_problems__a_choice_of_forms_reports_the_closest():
    found = problems(EmailSend, {"to": ["a@b.example", 5], "subject": "s", "text": "t"})

    assert found == {"payload.to[1]": "must be a string"}


def test_payload_problems__fields_that_exclude_each_other():
    found = problems(HttpRequest, {"url": "http://x.example/", "json": {}, "body": "b"})

    assert found == {"payload": "must not have all of: json, body"}


def test_payload_problems__a_key_that_is_no_identifier_is_quoted():
    assert (
        payloads.json_path(["headers", "X-Request-Id", 0]) == 'payload.headers["X-Request-Id"][0]'
    )


def test_payload_problems__a_non_object_payload():
    assert problems(Echo, [1, 2]) == {"payload": "must be a JSON object"}


def test_payload_problems__booleans_are_not_numbers():
    assert problems(Echo, {"sleep_ms": True}) == {"payload.sleep_ms": "must be an integer"}


def test_payload_problems__a_long_value_is_not_quoted_whole():
    class Letters(JobType):
        name = "test.letters"
        payload_schema = {
            "type": "object",
            "properties": {"s": {"format": "x", "const": "a" * 500}},
        }

    message = problems(Letters, {"s": "b"})["payload.s"]

    assert len(message) <= payloads.MAX_MESSAGE


def test_payload_check__the_types_own_check_runs_after_the_schema():
    with pytest.raises(PayloadError) as refused:
        EmailSend().payload_check({"to": "a@b.example", "subject": "two\nlines", "text": "t"})

    assert refused.value.errors == {"payload.subject": "must be on one line"}


def test_payload_check__the_types_own_check_never_sees_a_misshapen_payload():
    with pytest.raises(PayloadError) as refused:
        HttpRequest().payload_check({"headers": {"X-A": 5}})

    assert refused.value.errors == {
        "payload.url": "is required",
        'payload.headers["X-A"]': "must be a string",
    }


# --- the schemas served are the schemas enforced -----------------------------------------------


def test_job_types_endpoint__serves_the_schema_the_validator_uses(client_a):
    served = {entry["name"]: entry for entry in client_a.get("/api/v1/job-types/").json()}

    for name, job_type in job_types().items():
        schema = served[name]["payload_schema"]
        assert schema == payloads.payload_schema_of(type(job_type))
        Draft7Validator.check_schema(schema)
        assert "time_limit" in schema["properties"]


def test_job_types_endpoint__a_payload_the_served_schema_refuses_is_refused(client_a):
    served = {entry["name"]: entry for entry in client_a.get("/api/v1/job-types/").json()}
    validator = Draft7Validator(served["echo"]["payload_schema"])
    payload = {"sleep_ms": -1, "time_limit": 0}
    assert not validator.is_valid(payload)

    response = client_a.post(
        "/api/v1/batches/", {"type": "echo", "items": [{"payload": payload}]}, format="json"
    )

    assert response.status_code == 400
    fields = sorted(error["field"] for error in response.json()["errors"])
    assert fields == ["payload.sleep_ms", "payload.time_limit"]


# --- a bad schema fails at start-up -------------------------------------------------------------


class BadSchema(JobType):
    name = "test.bad-schema"
    payload_schema = {"type": "object", "properties": {"n": {"type": "numbr"}}}


def test_checks__a_type_with_an_unusable_schema_is_an_error(settings):
    settings.BATCHSITE_JOB_TYPES = [
        *settings.BATCHSITE_JOB_TYPES,
        "tests.jobs.test_payloads.BadSchema",
    ]

    errors = [message for message in checks.run_checks() if message.id == "jobs.E002"]

    assert len(errors) == 1
    assert "BadSchema.payload_schema" in errors[0].msg
