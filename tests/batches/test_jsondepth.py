"""json_too_deep measures JSON text without parsing it: exactly, for any JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batches.jsondepth import json_too_deep, json_value_end

# Strings made of what could fool a scanner: brackets, quotes, backslashes, escapes.
TRICKY_TEXT = st.text(alphabet='[]{}"\\/ \n\tu0aé\u2028\ud800', max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=60,
)


def depth_of(value) -> int:
    """Return how deeply arrays and objects nest in a parsed value, by walking it."""
    if isinstance(value, list):
        return 1 + max((depth_of(part) for part in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(part) for part in value.values()), default=0)
    return 0


@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=8), ascii=st.booleans())
def test_json_too_deep__agrees_with_the_parsed_depth_for_any_json(value, limit, ascii):
    text = json.dumps(value, ensure_ascii=ascii)

    assert json_too_deep(text, limit) == (depth_of(value) > limit)
    assert json_too_deep(text.encode("utf-8", "surrogatepass"), limit) == (depth_of(value) > limit)


@given(depth=st.integers(min_value=1, max_value=300))
def test_json_too_deep__the_limit_is_inclusive(depth):
    text = '{"a": [' * depth + "]}" * depth

    assert not json_too_deep(text, 2 * depth)
    assert json_too_deep(text, 2 * depth - 1)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[]", 1),
        ('["]]]]"]', 1),
        (r'["\"[[[["]', 1),  # an escaped quote does not end the string
        (r'["\\", [[1]]]', 3),  # an escaped backslash does not escape the quote after it
        (r'["\\\"[", [1]]', 2),
        ('[[[["unterminated', 4),  # what a cut body opened counts
        ("[" * 100_000, 100_000),
        ("[1]]]][[[[", 1),  # the parser stops at the first stray bracket
        ('{"a": "\\u005b\\u005b", "b": [{}]}', 3),
    ],
)
def test_json_too_deep__counts_only_what_the_parser_would_enter(text, depth):
    assert json_too_deep(text, depth - 1)
    assert not json_too_deep(text, depth)


def test_json_too_deep__a_text_with_few_brackets_is_not_scanned():
    # More quotes than anything, but two brackets: the counts alone answer.
    assert not json_too_deep('"' * 10_000 + "[[", 2)


def test_json_too_deep__lone_surrogates_from_undecodable_bytes_are_text():
    text = b'[["\xff["]]'.decode("utf-8", "surrogateescape")

    assert not json_too_deep(text, 2)
    assert json_too_deep(text, 1)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("[1, [2], 3] tail", 0, 11),
        ('x {"a": "}]", "b": [{}]} ,', 2, 24),
        ('[["\\"]"]]', 0, 9),
        ("[[[1]]", 0, None),
        ('["]"', 0, None),
    ],
)
def test_json_value_end__finds_where_the_value_closes(text, start, end):
    assert json_value_end(text, start) == end
