"""Tests for batches.ingest.items: every bad item shape is refused with its index and fields."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batches import services
from batches.exceptions import InvalidInput
from batches.ingest.items import MAX_TEXT, ItemProblem, ItemSpec, item_parse
from batches.models import Item
from jobs import job_types
from tests.factories import BatchFactory


def parse(obj, *, index=0, default_type="echo"):
    return item_parse(obj, index=index, default_type=default_type)


def spec(obj, *, default_type="echo") -> tuple:
    """Parse a good item; return its (payload, type, external_id, key)."""
    parsed = parse(obj, default_type=default_type)
    assert isinstance(parsed, ItemSpec), parsed
    assert json.loads(parsed.payload_json) == parsed.payload
    return (parsed.payload, parsed.type, parsed.external_id, parsed.key)


def problem(obj, *, index=0, default_type="echo") -> ItemProblem:
    parsed = parse(obj, index=index, default_type=default_type)
    assert isinstance(parsed, ItemProblem), parsed
    assert parsed.index == index
    return parsed


# --- good items ---------------------------------------------------------------------------------


def test_item_parse__minimal_item_takes_the_default_type():
    parsed = spec({"payload": {"a": 1}}, default_type="test.flaky")

    assert parsed == ({"a": 1}, "test.flaky", "", "")


def test_item_parse__full_item_keeps_every_field():
    obj = {"external_id": "ext-1", "key": "img/1", "type": "echo", "payload": {"fail": False}}

    parsed = spec(obj, default_type="test.flaky")

    assert parsed == ({"fail": False}, "echo", "ext-1", "img/1")


def test_item_parse__null_text_fields_mean_empty():
    parsed = spec({"external_id": None, "key": None, "type": None, "payload": {}})

    assert parsed == ({}, "echo", "", "")


def test_item_parse__text_fields_at_the_length_limit_are_accepted():
    text = "x" * MAX_TEXT

    assert spec({"external_id": text, "key": text, "payload": {}}) == ({}, "echo", text, text)


def test_item_parse__payload_at_the_size_limit_is_accepted(settings):
    payload = {"s": "x" * 20}
    settings.BATCHSITE_MAX_PAYLOAD_BYTES = len(json.dumps(payload, separators=(",", ":")))

    assert isinstance(parse({"payload": payload}), ItemSpec)


# --- bad items ----------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [[], ["payload"], "text", 7, 1.5, None, True])
def test_item_parse__non_object_is_refused(obj):
    found = problem(obj, index=4)

    assert found.errors == {"item": "must be a JSON object"}
    assert found.as_dict() == {
        "index": 4,
        "code": "invalid",
        "message": "item: must be a JSON object",
        "fields": {"item": "must be a JSON object"},
    }


def test_item_parse__unknown_field_is_refused():
    found = problem({"payload": {}, "colour": "red", "extra": 1})

    assert found.errors == {"item": "unknown field(s): colour, extra"}


@pytest.mark.parametrize("value", [12, 1.5, True, ["a"], {"a": 1}])
def test_item_parse__non_string_external_id_is_refused(value):
    found = problem({"external_id": value, "payload": {}})

    assert found.errors == {"external_id": "must be a string"}
    assert found.external_id == ""


@pytest.mark.parametrize("value", [12, ["a"]])
def test_item_parse__non_string_key_is_refused(value):
    found = problem({"key": value, "payload": {}})

    assert found.errors == {"key": "must be a string"}


def test_item_parse__over_long_key_is_refused():
    found = problem({"external_id": "e-1", "key": "k" * (MAX_TEXT + 1), "payload": {}})

    assert found.errors == {"key": f"must be at most {MAX_TEXT} characters"}
    assert found.external_id == "e-1"
    assert found.as_dict()["external_id"] == "e-1"


def test_item_parse__over_long_external_id_is_refused():
    found = problem({"external_id": "e" * (MAX_TEXT + 1), "payload": {}})

    assert set(found.errors) == {"external_id"}
    assert found.external_id == ""


def test_item_parse__unknown_type_is_refused():
    found = problem({"type": "no.such.type", "payload": {}})

    assert found.errors == {"type": "unknown job type 'no.such.type'"}


def test_item_parse__unknown_default_type_is_refused():
    found = problem({"payload": {}}, default_type="gone")

    assert set(found.errors) == {"type"}


@pytest.mark.parametrize("value", [7, ["echo"], {"name": "echo"}])
def test_item_parse__non_string_type_is_refused(value):
    found = problem({"type": value, "payload": {}})

    assert set(found.errors) == {"type"}


@pytest.mark.parametrize("value", [0, False, [], {}])
def test_item_parse__falsy_non_string_type_is_refused_not_defaulted(value):
    # A type that is present but not a string is a client error, whatever its truthiness;
    # only an absent or null type means "the batch's default type".
    found = problem({"type": value, "payload": {}})

    assert set(found.errors) == {"type"}


def test_item_parse__missing_payload_is_refused():
    found = problem({"external_id": "e-2"}, index=9)

    assert found.errors == {"payload": "is required"}
    assert found.as_dict()["index"] == 9
    assert found.as_dict()["external_id"] == "e-2"


@pytest.mark.parametrize("payload", [None, [], "text", 3])
def test_item_parse__non_object_payload_is_refused(payload):
    found = problem({"payload": payload})

    assert found.errors == {"payload": "must be a JSON object"}


def test_item_parse__payload_failing_its_type_validation_is_refused():
    found = problem({"payload": {"fail": "yes", "sleep_ms": -1}})

    assert found.errors == {
        "payload.fail": "must be true or false",
        "payload.sleep_ms": "must be at least 0",
    }
    assert "payload.fail: must be true or false" in found.message


def test_item_parse__payload_is_validated_by_the_item_type_not_the_batch_type():
    # echo refuses a non-boolean `fail`; test.flaky takes any object.
    assert isinstance(parse({"payload": {"fail": "yes"}}, default_type="test.flaky"), ItemSpec)
    assert isinstance(
        parse({"type": "echo", "payload": {"fail": "yes"}}, default_type="test.flaky"),
        ItemProblem,
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1, 2}, b"bytes"])
def test_item_parse__payload_that_is_not_json_is_refused(bad):
    found = problem({"payload": {"value": bad}})

    assert set(found.errors) == {"payload"}
    assert found.errors["payload"].startswith("is not JSON")


def test_item_parse__payload_over_the_size_limit_is_refused(settings):
    settings.BATCHSITE_MAX_PAYLOAD_BYTES = 50
    payload = {"s": "x" * 50}

    found = problem({"payload": payload})

    size = len(json.dumps(payload, separators=(",", ":")))
    assert found.errors == {"payload": f"is {size} bytes; the limit is 50"}


def test_item_parse__every_problem_of_an_item_is_reported_at_once():
    found = problem({"external_id": 5, "key": 6, "type": "nope", "colour": 1})

    assert set(found.errors) == {"item", "external_id", "key", "type", "payload"}


# --- lists, through services.items_add, which checks them as it writes them -------------------


def items_add_problems(objs) -> list[dict] | None:
    """Add `objs` to a new batch; return the problems reported, or None if all were added.

    Either way, check that the batch holds all of them or none.
    """
    batch = BatchFactory()
    try:
        added = services.items_add(batch=batch, items=objs, actor="test")
    except InvalidInput as exc:
        assert not Item.objects.filter(batch=batch).exists()
        batch.refresh_from_db()
        assert (batch.total_items, batch.pending_items) == (0, 0)
        return exc.extra["errors"]
    assert added == range(len(objs))
    stored = Item.objects.filter(batch=batch).order_by("index")
    assert [item.payload for item in stored] == [obj["payload"] for obj in objs]
    return None


@pytest.mark.django_db
def test_items_add__reports_problems_by_their_input_index_and_adds_none():
    objs = [
        {"payload": {"n": 0}},
        "not an object",
        {"payload": {"n": 2}},
        {"external_id": "bad", "payload": {"fail": 1}},
        {"payload": {"n": 4}},
    ]

    problems = items_add_problems(objs)

    assert [(p["index"], p.get("external_id", ""), p["field"]) for p in problems] == [
        (1, "", "item"),
        (3, "bad", "payload.fail"),
    ]


KNOWN_TYPES = ["echo", "test.flaky"]
# Text a database can store: no NUL, no lone surrogates (those are refused; see below).
STORABLE = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
SAFE_KEYS = st.text(STORABLE, min_size=1, max_size=8).filter(
    lambda key: key not in {"fail", "sleep_ms", "transient_failures"}
)
SCALARS = st.none() | st.booleans() | st.integers() | st.text(STORABLE, max_size=10)
SHORT_TEXT = st.text(STORABLE, max_size=MAX_TEXT)

valid_items = st.fixed_dictionaries(
    {"payload": st.dictionaries(SAFE_KEYS, SCALARS, max_size=4)},
    optional={
        "external_id": SHORT_TEXT,
        "key": SHORT_TEXT,
        "type": st.sampled_from(KNOWN_TYPES),
    },
)

invalid_items = st.one_of(
    # not an object
    st.none() | st.integers() | st.text() | st.lists(st.integers(), max_size=2),
    # an unknown field
    st.fixed_dictionaries({"payload": st.just({}), "surprise": SCALARS}),
    # a non-string external_id or key
    st.fixed_dictionaries({"payload": st.just({}), "external_id": st.integers() | st.booleans()}),
    st.fixed_dictionaries({"payload": st.just({}), "key": st.integers()}),
    # an over-long key
    st.fixed_dictionaries(
        {"payload": st.just({}), "key": st.text(min_size=MAX_TEXT + 1, max_size=MAX_TEXT + 5)}
    ),
    # an unknown type
    st.fixed_dictionaries(
        {
            "payload": st.just({}),
            "type": st.text(min_size=1, max_size=12).filter(lambda t: t not in KNOWN_TYPES),
        }
    ),
    # no payload
    st.fixed_dictionaries({}, optional={"external_id": SHORT_TEXT}),
    # a payload that is not an object, or that echo refuses
    st.fixed_dictionaries({"payload": st.none() | st.integers() | st.lists(st.integers())}),
    st.fixed_dictionaries(
        {"type": st.just("echo"), "payload": st.fixed_dictionaries({"fail": st.integers()})}
    ),
)

mixed_items = st.lists(
    st.one_of(
        valid_items.map(lambda obj: (True, obj)),
        invalid_items.map(lambda obj: (False, obj)),
    ),
    max_size=30,
)


@pytest.mark.django_db
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mixed_items)
def test_items_add__problems_name_exactly_the_bad_items(tagged):
    objs = [obj for _, obj in tagged]
    assert set(job_types()) >= set(KNOWN_TYPES)

    problems = items_add_problems(objs) if objs else None

    bad = [index for index, (ok, _) in enumerate(tagged) if not ok]
    if bad:
        assert problems is not None
        # One entry per problem, an item's entries together, items in order.
        assert list(dict.fromkeys(p["index"] for p in problems)) == bad
    else:
        assert problems is None
