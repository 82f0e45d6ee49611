"""Tests for batches.ingest.formats (the JSONL, JSON array and CSV readers, format_sniff) and
batches.ingest.staging (receive, stage); the ZIP reader's are in test_archives.

Everything here runs without the database: readers see bytes, stage sees a file on disk.
"""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batches.exceptions import InvalidInput, TooLarge
from batches.ingest import formats, staging
from batches.ingest.formats import FileRejected
from batches.ingest.items import ItemProblem
from tests.helpers.files import MB, SNIFFED_FILES, csv_bytes, jsonl, lying_zip_data, tree, zip_data


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path) -> Path:
    """Give each test its own data dir, so leftover files are easy to spot."""
    settings.BATCHSITE_DATA_DIR = tmp_path / "data"
    settings.MEDIA_ROOT = tmp_path / "data" / "files"
    return settings.BATCHSITE_DATA_DIR


def records(reader) -> list[tuple[int, dict | ItemProblem]]:
    return list(reader)


def good(found) -> list[tuple[int, dict]]:
    return [(index, record) for index, record in found if not isinstance(record, ItemProblem)]


def problems(found) -> list[ItemProblem]:
    return [record for _, record in found if isinstance(record, ItemProblem)]


def read_jsonl(body: bytes):
    return records(formats.jsonl_records(io.BytesIO(body)))


def read_csv(body: bytes, *, infer_types=False):
    return records(formats.csv_records(io.BytesIO(body), infer_types=infer_types))


# --- format_of -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/x-ndjson", "jsonl"),
        ("application/jsonl", "jsonl"),
        ("Application/X-NDJSON; charset=utf-8", "jsonl"),
        ("text/csv", "csv"),
        ("text/csv; charset=utf-8; header=present", "csv"),
        ("application/zip", "zip"),
        ("application/json", "json"),
        ("Application/JSON; charset=utf-8", "json"),
        ("text/plain", None),
        ("application/octet-stream", None),
        ("", None),
    ],
)
def test_format_of__maps_content_types(content_type, expected):
    assert formats.format_of(content_type) == expected


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_records__one_object_per_line_indexed_by_line():
    body = jsonl({"external_id": "a", "payload": {"n": 0}}) + b"\n   \n" + jsonl({"payload": {}})

    found = read_jsonl(body)

    assert found == [(0, {"external_id": "a", "payload": {"n": 0}}), (3, {"payload": {}})]


def test_jsonl_records__bom_and_crlf_are_accepted():
    body = formats.UTF8_BOM + b'{"payload": {"n": 0}}\r\n{"payload": {"n": 1}}\r\n'

    assert read_jsonl(body) == [(0, {"payload": {"n": 0}}), (1, {"payload": {"n": 1}})]


def test_jsonl_records__last_line_without_newline_is_read():
    assert read_jsonl(b'{"payload": {}}\n{"payload": {"n": 1}}') == [
        (0, {"payload": {}}),
        (1, {"payload": {"n": 1}}),
    ]


def test_jsonl_records__truncated_line_is_a_problem_at_its_index():
    body = jsonl({"payload": {}}) + b'{"payload": {"n": 1\n' + jsonl({"payload": {}})

    found = read_jsonl(body)

    assert [index for index, _ in good(found)] == [0, 2]
    [problem] = problems(found)
    assert (problem.index, problem.code) == (1, "invalid_json")
    assert "is not JSON" in problem.message


def test_jsonl_records__invalid_utf8_is_a_problem_at_its_index():
    body = jsonl({"payload": {}}) + b'{"payload": {"s": "caf\xe9"}}\n' + jsonl({"payload": {}})

    found = read_jsonl(body)

    assert [index for index, _ in good(found)] == [0, 2]
    [problem] = problems(found)
    assert (problem.index, problem.code) == (1, "invalid_utf8")


def test_jsonl_records__valid_json_that_is_not_an_object_is_passed_on_for_validation():
    # The reader yields it; item_parse refuses it (see test_stage__reports_bad_items).
    assert read_jsonl(b'[1, 2]\n"text"\n') == [(0, [1, 2]), (1, "text")]


def test_jsonl_records__bom_only_on_the_first_line_is_stripped():
    body = jsonl({"payload": {}}) + formats.UTF8_BOM + jsonl({"payload": {}})

    found = read_jsonl(body)

    assert [index for index, _ in good(found)] == [0]
    assert [problem.index for problem in problems(found)] == [1]


# Text a database can store: no NUL (PostgreSQL refuses it), no lone surrogates.
TEXT_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
jsonl_items = st.lists(
    st.fixed_dictionaries(
        {"payload": st.dictionaries(st.text(), json_values, max_size=5)},
        optional={
            "external_id": st.text(alphabet=TEXT_CHARACTERS),
            "key": st.text(max_size=20),
            "type": st.sampled_from(["echo", "test.flaky"]),
        },
    ),
    min_size=1,
    max_size=20,
)


@given(items=jsonl_items, ensure_ascii=st.booleans(), crlf=st.booleans())
def test_jsonl_records__round_trip(items, ensure_ascii, crlf):
    newline = b"\r\n" if crlf else b"\n"
    body = b"".join(
        json.dumps(item, ensure_ascii=ensure_ascii).encode() + newline for item in items
    )

    found = read_jsonl(body)

    assert found == list(enumerate(items))


# --- a JSON array --------------------------------------------------------------------------------


class Trickle(io.BytesIO):
    """A file that hands out at most `size` bytes a read, so elements are cut everywhere."""

    def __init__(self, body: bytes, size: int):
        super().__init__(body)
        self.size = size

    def read(self, n=-1):
        return super().read(self.size if n is None or n < 0 else min(n, self.size))


def read_json(body: bytes, *, trickle: int | None = None, max_item: int = MB):
    file = Trickle(body, trickle) if trickle else io.BytesIO(body)
    return records(formats.json_array_records(file, max_item=max_item))


def test_json_array_records__one_record_per_element_indexed_by_position():
    body = (
        formats.UTF8_BOM
        + b' [\r\n {"external_id": "a", "payload": {"n": 0}},\n\t{"payload": {}} ]\n'
    )

    assert read_json(body) == [(0, {"external_id": "a", "payload": {"n": 0}}), (1, {"payload": {}})]


def test_json_array_records__empty_array_yields_nothing():
    assert read_json(b" [ \n ] \n") == []


def test_json_array_records__elements_cut_anywhere_by_the_reads_come_out_whole():
    items = [{"payload": {"n": n, "third": n / 3, "s": "é€" * n}} for n in range(40)]
    # Bare values are passed on for validation; a number cut short must not read as shorter.
    items += [12345678901234567890, -1.5e-7, "text", None, True, []]
    body = json.dumps(items, ensure_ascii=False).encode()

    for size in (1, 2, 3, 7, 64, 1000):
        assert read_json(body, trickle=size) == list(enumerate(items)), size


@given(
    items=jsonl_items,
    indent=st.sampled_from([None, 0, 2]),
    ensure_ascii=st.booleans(),
    trickle=st.integers(min_value=1, max_value=100),
)
def test_json_array_records__round_trip(items, indent, ensure_ascii, trickle):
    body = json.dumps(items, indent=indent, ensure_ascii=ensure_ascii).encode()

    assert read_json(body, trickle=trickle) == list(enumerate(items))


@pytest.mark.parametrize(
    ("body", "index", "message"),
    [
        (b'[{"payload": {}}, {"payload": }]', 1, "is not JSON: Expecting value"),
        (b'[{"payload": {}},]', 1, "is not JSON: Expecting value"),
        (b'[{"payload": {}} {"payload": {}}]', 0, "is followed by '{', not ',' or ']'"),
        (b'[{"payload": {}}', 0, "is followed by the end of the file"),
        (b'[{"payload": {}}, {"payload": {"s": "open', 1, "is not JSON: Unterminated string"),
    ],
    ids=["bad-value", "trailing-comma", "no-comma", "no-closing-bracket", "open-string"],
)
def test_json_array_records__syntax_error_rejects_the_whole_file_naming_the_item(
    body, index, message
):
    with pytest.raises(FileRejected, match=f"item {index} of the JSON array") as caught:
        read_json(body, trickle=5)

    [error] = caught.value.errors
    assert error["index"] == index
    assert message in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (jsonl({"payload": {}}), "it starts with '{' (JSON Lines go as application/x-ndjson)"),
        (b"", "it is empty"),
        (b"  \n", "it is empty"),
        (b'"items"', "it starts with '\"'"),
    ],
    ids=["jsonl", "empty", "blank", "string"],
)
def test_json_array_records__body_that_is_not_an_array_is_rejected(body, message):
    with pytest.raises(FileRejected, match="not a JSON array of items") as caught:
        read_json(body)

    assert message in caught.value.message
    assert caught.value.errors == [
        {"field": "file", "message": "must be a JSON array of item objects"}
    ]


def test_json_array_records__text_after_the_array_is_rejected():
    with pytest.raises(FileRejected, match="followed by more text") as caught:
        read_json(b'[{"payload": {}}]\n[{"payload": {}}]')

    assert caught.value.errors == [{"field": "file", "message": "has '[' after the closing ']'"}]


def test_json_array_records__element_over_the_limit_is_rejected_naming_it():
    body = b'[{"payload": {}}, {"payload": {"blob": "' + b"x" * 10_000 + b'"}}]'

    with pytest.raises(FileRejected) as caught:
        read_json(body, max_item=4096)

    assert caught.value.errors == [{"index": 1, "message": "is longer than 4096 characters"}]


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_records__item_columns_are_fields_and_the_rest_is_payload():
    body = csv_bytes(
        ["external_id", "key", "type", "n", "name"],
        ["a", "k-a", "test.flaky", "1", "Ann"],
        ["b", "", "", "2", ""],
    )

    found = read_csv(body)

    assert found == [
        (
            0,
            {
                "external_id": "a",
                "key": "k-a",
                "type": "test.flaky",
                "payload": {"n": "1", "name": "Ann"},
            },
        ),
        (1, {"external_id": "b", "payload": {"n": "2", "name": ""}}),
    ]


def test_csv_records__header_names_are_stripped():
    found = read_csv(b" external_id , n \nx,1\n")

    assert found == [(0, {"external_id": "x", "payload": {"n": "1"}})]


def test_csv_records__bom_and_crlf_are_accepted():
    body = formats.UTF8_BOM + csv_bytes(
        ["external_id", "n"], ["a", "1"], ["b", "2"], lineterminator="\r\n"
    )

    found = read_csv(body)

    assert found == [
        (0, {"external_id": "a", "payload": {"n": "1"}}),
        (1, {"external_id": "b", "payload": {"n": "2"}}),
    ]


def test_csv_records__quoted_newlines_stay_in_the_value():
    body = b'external_id,text\na,"line 1\r\nline 2"\nb,x\n'

    found = read_csv(body)

    assert found == [
        (0, {"external_id": "a", "payload": {"text": "line 1\r\nline 2"}}),
        (1, {"external_id": "b", "payload": {"text": "x"}}),
    ]


def test_csv_records__wrong_column_count_is_a_problem_at_its_row():
    body = b"external_id,n\na,1\nb,2,extra\nc\nd,4\n"

    found = read_csv(body)

    assert [index for index, _ in good(found)] == [0, 3]
    assert [(p.index, p.code) for p in problems(found)] == [
        (1, "wrong_column_count"),
        (2, "wrong_column_count"),
    ]
    assert "has 3 columns; the header has 2" in problems(found)[0].message


def test_csv_records__invalid_utf8_is_a_problem_at_its_row():
    body = b"external_id,name\na,Ann\nb,Jos\xe9\nc,Cy\n"

    found = read_csv(body)

    assert [index for index, _ in good(found)] == [0, 2]
    assert [(p.index, p.code) for p in problems(found)] == [(1, "invalid_utf8")]


def test_csv_records__blank_rows_are_skipped_but_counted():
    body = b"external_id\na\n\nb\n"

    assert read_csv(body) == [
        (0, {"external_id": "a", "payload": {}}),
        (2, {"external_id": "b", "payload": {}}),
    ]


def test_csv_records__unreadable_row_is_a_problem_and_reading_goes_on():
    body = b"external_id,blob\na," + b"x" * 200_000 + b"\nb,y\n"

    found = read_csv(body)

    assert [(p.index, p.code) for p in problems(found)] == [(0, "invalid_csv")]
    assert good(found) == [(1, {"external_id": "b", "payload": {"blob": "y"}})]


def test_csv_records__header_only_yields_nothing():
    assert read_csv(b"external_id,n\n") == []


def test_csv_records__empty_file_is_rejected():
    with pytest.raises(FileRejected, match="empty"):
        read_csv(b"")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"external_id,n,n\n", "repeats n"),
        (b"external_id, n ,n\n", "repeats n"),
        (b"external_id,,n\n", "empty column name"),
        (b"external_id,n\xff\n", "not UTF-8"),
    ],
    ids=["duplicate", "duplicate-after-strip", "empty", "invalid-utf8"],
)
def test_csv_records__unusable_header_is_rejected(header, message):
    with pytest.raises(FileRejected) as caught:
        read_csv(header + b"a,1,2\n")

    assert caught.value.errors
    assert all(error["field"] == "header" for error in caught.value.errors)
    assert any(message in error["message"] for error in caught.value.errors)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("true", True),
        ("FALSE", False),
        ("null", None),
        ("", None),
        ("NaN", "NaN"),
        ("inf", "inf"),
        ("-Infinity", "-Infinity"),
        ("Ann", "Ann"),
        ("0x10", "0x10"),
    ],
)
def test_csv_records__infer_types_reads_plain_numbers_bools_and_nulls(cell, expected):
    body = csv_bytes(["v"], [cell]) if cell else b'v\n""\n'

    [(_, record)] = read_csv(body, infer_types=True)

    assert record["payload"]["v"] == expected
    assert type(record["payload"]["v"]) is type(expected)


@pytest.mark.parametrize(
    "cell", ["1_000", "\u0663", "\uff11\uff12"], ids=["underscore", "arabic-indic", "fullwidth"]
)
def test_csv_records__infer_types_keeps_what_only_python_reads_as_a_number(cell):
    # int() accepts "1_000" and non-ASCII digits; a CSV cell like that is text, not plainly
    # a number, and must not be turned into 1000 or 3.
    [(_, record)] = read_csv(csv_bytes(["v"], [cell]), infer_types=True)

    assert record["payload"]["v"] == cell


def test_csv_records__item_columns_are_never_inferred():
    [(_, record)] = read_csv(
        csv_bytes(["external_id", "key", "n"], ["1", "true", "1"]), infer_types=True
    )

    assert record == {"external_id": "1", "key": "true", "payload": {"n": 1}}


column_names = st.text(alphabet=TEXT_CHARACTERS, min_size=1).filter(
    lambda name: name == name.strip() and name not in formats.ITEM_COLUMNS
)
cell_text = st.text(alphabet=TEXT_CHARACTERS)


@st.composite
def csv_tables(draw, values):
    """Draw (header, rows, expected records) for a CSV with payload columns of `values`."""
    names = draw(st.lists(column_names, min_size=1, max_size=5, unique=True))
    with_id = draw(st.booleans())
    header = (["external_id"] if with_id else []) + names
    rows, expected = [], []
    for _ in range(draw(st.integers(min_value=1, max_value=10))):
        external_id = draw(cell_text) if with_id else ""
        cells = [draw(values) for _ in names]
        record = {"external_id": external_id} if external_id else {}
        record["payload"] = {name: value for name, (value, _) in zip(names, cells, strict=True)}
        rows.append(([external_id] if with_id else []) + [text for _, text in cells])
        expected.append(record)
    return header, rows, expected


string_cells = cell_text.map(lambda text: (text, text))
typed_cells = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63).map(lambda n: (n, str(n))),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: (x, repr(x))),
    st.booleans().map(lambda b: (b, str(b).lower())),
    st.sampled_from([(None, "null"), (None, "")]),
)


@given(table=csv_tables(string_cells), crlf=st.booleans())
def test_csv_records__round_trip_keeps_strings(table, crlf):
    header, rows, expected = table
    # The writer quotes only values holding its own line terminator, so a bare "\r" needs
    # QUOTE_ALL when lines end in "\n".
    if crlf:
        body = csv_bytes(header, *rows, lineterminator="\r\n")
    else:
        body = csv_bytes(header, *rows, lineterminator="\n", quoting=csv.QUOTE_ALL)

    found = read_csv(body)

    assert found == list(enumerate(expected))


@given(table=csv_tables(typed_cells))
def test_csv_records__round_trip_infers_types(table):
    header, rows, expected = table

    found = read_csv(csv_bytes(header, *rows, lineterminator="\r\n"), infer_types=True)

    assert found == list(enumerate(expected))
    for (_, record), wanted in zip(found, expected, strict=True):
        for name, value in wanted["payload"].items():
            assert type(record["payload"][name]) is type(value)


# --- format_sniff --------------------------------------------------------------------------------

# One file of each format a body is recognised as without its Content-Type or name, each
# holding the items "a" and "b": (format, body, the job type its items need).
# Bodies whose first bytes show none of the formats.


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"PK\x03\x04\x14\x00\x00\x00", "zip"),
        (zip_data([]), "zip"),
        (b'[{"payload": {}}]', "json"),
        (formats.UTF8_BOM + b"\r\n  [", "json"),
        (b'{"payload": {}}\n', "jsonl"),
        (b'\n\n {"payload"', "jsonl"),
        (b"external_id,n\na,1\n", "csv"),
        (formats.UTF8_BOM + b"external_id,n\r\n", "csv"),
        ("name,città".encode()[:-1], "csv"),
        (b"", None),
        (b"hello world\n", None),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", None),
        (b"a,b\n\x00\x01", None),
        ("a,b".encode("utf-16"), None),
        (b"a,\x01b\n", None),
    ],
    ids=[
        "zip",
        "empty-zip",
        "json-array",
        "json-array-after-bom-and-blanks",
        "jsonl",
        "jsonl-after-blank-lines",
        "csv",
        "csv-after-bom",
        "csv-head-cut-in-a-character",
        "empty",
        "text-without-a-comma",
        "pdf",
        "nul-byte",
        "utf-16",
        "control-character",
    ],
)
def test_format_sniff__tells_the_format_by_the_first_bytes(head, expected):
    assert formats.format_sniff(head) == expected


@pytest.mark.parametrize(("fmt", "body", "job_type"), SNIFFED_FILES)
def test_format_sniff_file__recognises_each_sample_file(tmp_path, fmt, body, job_type):
    path = tmp_path / "no-extension"
    path.write_bytes(body)

    assert formats.format_sniff_file(path) == fmt


def test_format_sniff_file__reads_only_the_head(tmp_path):
    path = tmp_path / "no-extension"
    # The first line's comma lies past the bytes looked at.
    path.write_bytes(b"x" * formats.SNIFF_BYTES + b",y\n1,2\n")

    assert formats.format_sniff_file(path) is None


# --- receive -------------------------------------------------------------------------------------


class Unreadable(io.RawIOBase):
    def read(self, size=-1):
        raise AssertionError("the body must not be read")


def test_receive__copies_the_body_to_a_temporary_file(data_dir):
    body = b"x" * (staging.READ_BLOCK * 2 + 17)

    path = staging.receive(io.BytesIO(body), content_length=len(body), limit=len(body))

    assert path.read_bytes() == body
    assert path.parent == staging.work_dir()
    assert data_dir in path.parents


def test_receive__declared_length_over_the_limit_is_refused_unread(data_dir):
    with pytest.raises(TooLarge, match="the limit is 10"):
        staging.receive(Unreadable(), content_length=11, limit=10)

    assert tree(data_dir) == []


@pytest.mark.parametrize("content_length", [None, 5], ids=["no-length", "understated"])
def test_receive__streamed_bytes_over_the_limit_are_refused(data_dir, content_length):
    body = b"x" * (staging.READ_BLOCK + 1)

    with pytest.raises(TooLarge):
        staging.receive(io.BytesIO(body), content_length=content_length, limit=staging.READ_BLOCK)

    assert tree(data_dir) == []


def test_receive__exactly_the_limit_is_accepted(data_dir):
    path = staging.receive(io.BytesIO(b"12345"), content_length=None, limit=5)

    assert path.read_bytes() == b"12345"


# --- stage ---------------------------------------------------------------------------------------


def stage_bytes(tmp_path, body: bytes, *, fmt="jsonl", default_type="echo", **kwargs):
    path = tmp_path / f"upload.{fmt}"
    path.write_bytes(body)
    return staging.stage(
        path, fmt=fmt, default_type=default_type, files_prefix="batches/b1/in", **kwargs
    )


def files_dir() -> Path:
    from django.conf import settings

    return Path(settings.MEDIA_ROOT) / "batches" / "b1" / "in"


def staging_files() -> list[str]:
    return tree(staging.work_dir())


def test_stage__writes_good_items_and_reports_bad_ones(tmp_path):
    body = (
        jsonl({"external_id": "a", "key": "k", "payload": {"n": 0}})
        + b"{broken\n"
        + jsonl({"type": "test.flaky", "payload": {"n": 2}})
    )

    staged = stage_bytes(tmp_path, body)

    assert (staged.added, staged.rejected, staged.format) == (2, 1, "jsonl")
    # The last value is the item's line in the file: the refused line leaves a gap.
    assert [tuple(row) for row in staged.items()] == [
        ("a", "k", "echo", '{"n":0}', "", 0),
        ("", "", "test.flaky", '{"n":2}', "", 2),
    ]
    assert [(p["index"], p["code"]) for p in staged.all_problems()] == [(1, "invalid_json")]
    assert staged.report(dry_run=False) == {
        "added": 2,
        "rejected": 1,
        "valid": 2,
        "dry_run": False,
        "format": "jsonl",
        "errors": staged.problems,
    }
    assert staged.report(dry_run=True)["added"] == 0
    staged.close()
    assert staging_files() == []


@pytest.mark.parametrize(
    ("line", "code", "field", "message"),
    [
        (b"[1, 2]", "invalid", "item", "must be a JSON object"),
        (b"42", "invalid", "item", "must be a JSON object"),
        (b'{"payload": {}, "colour": "red"}', "invalid", "item", "unknown field(s): colour"),
        (b'{"payload": {"fail": "yes"}}', "invalid", "payload.fail", "must be true or false"),
        (b'{"external_id": "x"}', "invalid", "payload", "is required"),
        (b'{"type": "nope", "payload": {}}', "invalid", "type", "unknown job type"),
        (b'{"payload": {"n": NaN}}', "invalid", "payload", "is not JSON"),
    ],
    ids=["list", "number", "unknown-field", "echo-payload", "no-payload", "bad-type", "nan"],
)
def test_stage__reports_bad_items(tmp_path, line, code, field, message):
    body = jsonl({"payload": {}}) + line + b"\n"

    staged = stage_bytes(tmp_path, body)

    assert (staged.added, staged.rejected) == (1, 1)
    [problem] = staged.problems
    assert (problem["index"], problem["code"]) == (1, code)
    assert message in problem["fields"][field]
    staged.close()


def test_stage__problem_names_the_external_id_when_known(tmp_path):
    staged = stage_bytes(tmp_path, jsonl({"external_id": "inv-7", "payload": {"fail": 1}}))

    assert staged.problems[0]["external_id"] == "inv-7"
    staged.close()


def test_stage__keeps_only_the_first_problems_for_the_answer_but_all_on_file(tmp_path):
    body = b"{bad\n" * (staging.REPORTED_ERRORS + 5) + jsonl({"payload": {}})

    staged = stage_bytes(tmp_path, body)

    assert staged.rejected == staging.REPORTED_ERRORS + 5
    assert len(staged.problems) == staging.REPORTED_ERRORS
    assert len(staged.report(dry_run=False)["errors"]) == staging.REPORTED_ERRORS
    assert [p["index"] for p in staged.all_problems()] == list(range(staging.REPORTED_ERRORS + 5))
    staged.close()


def test_stage__csv_with_inferred_types(tmp_path):
    body = csv_bytes(["external_id", "n", "ok"], ["a", "3", "true"])

    staged = stage_bytes(tmp_path, body, fmt="csv", csv_types="infer")

    assert [json.loads(item[3]) for item in staged.items()] == [{"n": 3, "ok": True}]
    staged.close()


@pytest.mark.parametrize(
    ("fmt", "body"),
    [("jsonl", b""), ("jsonl", b"\n \r\n\n"), ("csv", b"external_id,n\n")],
    ids=["empty-jsonl", "blank-jsonl", "header-only-csv"],
)
def test_stage__file_without_items_is_invalid_and_leaves_nothing(tmp_path, fmt, body):
    with pytest.raises(InvalidInput, match="holds no items") as caught:
        stage_bytes(tmp_path, body, fmt=fmt)

    assert caught.value.errors == [{"field": "file", "message": "holds no items"}]
    assert staging_files() == []


def test_stage__json_array_items_keep_their_position_in_the_file(tmp_path):
    body = json.dumps(
        [
            {"external_id": "a", "payload": {}},
            {"external_id": "b", "payload": {"fail": "yes"}},
            {"external_id": "c", "payload": {"n": 2}},
        ]
    ).encode()

    staged = stage_bytes(tmp_path, body, fmt="json")

    assert (staged.added, staged.rejected, staged.format) == (2, 1, "json")
    assert [tuple(row) for row in staged.items()] == [
        ("a", "", "echo", "{}", "", 0),
        ("c", "", "echo", '{"n":2}', "", 2),
    ]
    [problem] = staged.problems
    assert (problem["index"], problem["external_id"]) == (1, "b")
    staged.close()


def test_stage__json_array_bytes_that_are_not_utf8_spoil_only_their_item(tmp_path):
    body = b'[{"payload": {"s": "caf\xe9"}}, {"payload": {}}]'

    staged = stage_bytes(tmp_path, body, fmt="json")

    assert (staged.added, staged.rejected) == (1, 1)
    [problem] = staged.problems
    assert problem["index"] == 0
    assert problem["fields"] == {"payload": "contains text that is not valid Unicode"}
    staged.close()


def test_stage__json_array_with_a_syntax_error_is_rejected_and_leaves_nothing(tmp_path):
    with pytest.raises(FileRejected, match="item 1 of the JSON array"):
        stage_bytes(tmp_path, b'[{"payload": {}}, {oops}]', fmt="json")

    assert staging_files() == []


def test_stage__close_keeps_extracted_files_and_drops_staging_files(tmp_path):
    body = zip_data([("a.txt", b"aaa"), ("b.txt", b"bbb")])

    staged = stage_bytes(tmp_path, body, fmt="zip", default_type="test.stamp")
    staged.close()

    assert not staged.path.exists()
    assert not staged.problems_path.exists()
    assert staging_files() == []
    found = tree(files_dir())
    assert len(found) == 2
    assert all(name.startswith("upload-") for name in found)


def test_stage__zip_staged_rows_hold_paths_under_media_root(tmp_path, settings):
    body = zip_data([("a.txt", b"aaa"), ("b.txt", b"bbb")])

    staged = stage_bytes(tmp_path, body, fmt="zip", default_type="test.stamp")

    rows = list(staged.items())
    assert [tuple(row[:4]) for row in rows] == [
        ("a.txt", "a.txt", "test.stamp", "{}"),
        ("b.txt", "b.txt", "test.stamp", "{}"),
    ]
    media = Path(settings.MEDIA_ROOT)
    assert [(media / row[4]).read_bytes() for row in rows] == [b"aaa", b"bbb"]
    assert all((media / row[4]).is_relative_to(files_dir()) for row in rows)
    staged.discard()
    assert tree(files_dir()) == []
    assert staging_files() == []


def test_stage__zip_for_a_type_without_files_is_invalid(tmp_path):
    body = zip_data([("a.txt", b"aaa")])

    with pytest.raises(InvalidInput, match="does not take files"):
        stage_bytes(tmp_path, body, fmt="zip", default_type="echo")

    assert tree(files_dir()) == []
    assert staging_files() == []


def test_stage__damaged_zip_leaves_no_files(tmp_path, settings):
    settings.BATCHSITE_ZIP_MAX_UNCOMPRESSED = MB
    body = lying_zip_data(real_size=2 * MB, declared=100)

    with pytest.raises(FileRejected):
        stage_bytes(tmp_path, body, fmt="zip", default_type="test.stamp")

    assert tree(files_dir()) == []
    assert staging_files() == []


def test_stage__zip_member_refused_by_validation_leaves_no_file(tmp_path, settings):
    long_name = "n" * 300 + ".txt"  # too long for external_id and key
    body = zip_data([("ok.txt", b"ok"), (long_name, b"orphan")])

    staged = stage_bytes(tmp_path, body, fmt="zip", default_type="test.stamp")

    assert (staged.added, staged.rejected) == (1, 1)
    [row] = staged.items()
    staged.close()
    # Only the accepted item's file may stay; nothing will ever point at the other one.
    kept = (Path(settings.MEDIA_ROOT) / row[4]).relative_to(files_dir())
    assert tree(files_dir()) == [str(kept)]


# --- memory --------------------------------------------------------------------------------------

MEMORY_BOUND = 50 * MB
LINES = 200_000


def peak_while(function):
    tracemalloc.start()
    try:
        result = function()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.slow
@pytest.mark.parametrize("bad", [False, True], ids=["good-lines", "bad-lines"])
def test_stage__memory_stays_flat_for_a_large_file(tmp_path, bad):
    path = tmp_path / "big.jsonl"
    filler = "x" * 100
    with open(path, "w", encoding="utf-8") as out:
        for n in range(LINES):
            payload = {"n": n, "text": filler}
            if bad:
                payload["fail"] = "not a bool"  # refused by echo: every line is a problem
            out.write(json.dumps({"external_id": f"ext-{n}", "payload": payload}) + "\n")
    assert path.stat().st_size > 25 * MB

    staged, peak = peak_while(
        lambda: staging.stage(path, fmt="jsonl", default_type="echo", files_prefix="batches/b1/in")
    )

    assert (staged.added, staged.rejected) == ((0, LINES) if bad else (LINES, 0))
    assert peak < MEMORY_BOUND, f"peak {peak / MB:.1f} MB"
    staged.close()


def test_stage__one_huge_jsonl_line_is_refused_without_loading_it(tmp_path):
    # The payload limit is 64 KB, yet a single 40 MB line is read, decoded and parsed whole
    # before it is refused: memory grows with the line, not the limit.
    path = tmp_path / "huge.jsonl"
    path.write_bytes(
        b'{"external_id": "huge", "payload": {"blob": "'
        + b"x" * (40 * MB)
        + b'"}}\n'
        + jsonl({"external_id": "small", "payload": {}})
    )

    staged, peak = peak_while(
        lambda: staging.stage(path, fmt="jsonl", default_type="echo", files_prefix="batches/b1/in")
    )

    assert (staged.added, staged.rejected) == (1, 1)
    assert staged.problems[0]["index"] == 0
    assert peak < 20 * MB, f"peak {peak / MB:.1f} MB for a 40 MB line"
    staged.close()


@pytest.mark.slow
def test_stage__memory_stays_flat_for_a_large_json_array(tmp_path):
    path = tmp_path / "big.json"
    filler = "x" * 100
    with open(path, "w", encoding="utf-8") as out:
        out.write("[\n")
        for n in range(LINES):
            item = {"external_id": f"ext-{n}", "payload": {"n": n, "text": filler}}
            out.write(("," if n else "") + json.dumps(item) + "\n")
        out.write("]\n")
    assert path.stat().st_size > 25 * MB

    staged, peak = peak_while(
        lambda: staging.stage(path, fmt="json", default_type="echo", files_prefix="batches/b1/in")
    )

    assert (staged.added, staged.rejected) == (LINES, 0)
    assert peak < MEMORY_BOUND, f"peak {peak / MB:.1f} MB"
    staged.close()


def test_stage__one_huge_json_array_element_is_refused_without_loading_it(tmp_path):
    path = tmp_path / "huge.json"
    path.write_bytes(b'[{"external_id": "huge", "payload": {"blob": "' + b"x" * (40 * MB) + b'"}}]')

    def refused():
        with pytest.raises(FileRejected, match="item 0 of the JSON array is longer than"):
            staging.stage(path, fmt="json", default_type="echo", files_prefix="batches/b1/in")

    _, peak = peak_while(refused)

    assert peak < 20 * MB, f"peak {peak / MB:.1f} MB for a 40 MB element"
    assert staging_files() == []
