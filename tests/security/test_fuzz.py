"""Fuzz every entry point that parses a body, on every surface: no input may answer 500 or HTML.

Hypothesis sends hostile bodies to batchsite's WSGI application, as gunicorn would:
random bytes, JSON nested thousands deep or left open, huge numbers, NaN and Infinity,
lone surrogates (escaped and raw), bytes that are not UTF-8, repeated keys, every field
of the endpoint with values of every type, under honest, wrong and broken Content-Types,
as JSON, forms and multipart; uploads get JSON Lines, JSON arrays, CSV and ZIP packages
that are all of these. Any answer is fine but a 5xx or an HTML page.

BATCHSITE_FUZZ_EXAMPLES sets the examples per entry point: few by default, so `make
test` stays quick; .ci/run gives a step of its own many more.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.test.client import encode_multipart
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from batches import services
from tests.helpers import wsgi_request
from tests.helpers.files import zip_data

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("BATCHSITE_FUZZ_EXAMPLES", "50"))
fuzz_settings = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The account, its key and the files folder are made once per test and shared by its
    # examples on purpose: no request changes them; each example makes its own batches.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
BOUNDARY = "fuzzboundary"

# --- JSON text, hostile ---------------------------------------------------------------------------

ODD_TOKENS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "1E-400",
        "-0",
        "9007199254740993",
        "2147483648",
        "-2147483649",
        "18446744073709551616",
        '"\\ud800"',  # a lone surrogate, escaped
        '"\\udfff\\ud800"',
        '"a\\u0000b"',
        '"\\uDEAD"',
        '"2024-02-30T25:61:00Z"',
        '"9999-12-31T23:59:59-14:00"',
        '"00000000-0000-0000-0000-000000000000"',
        '"http://localhost/a.jsonl"',
        '"http://[::1"',
        '"../../etc/passwd"',
        '"echo"',
        '"test.stamp"',
        '"image.derive"',
        "null",
        "true",
        "false",
        '""',
        "[]",
        "{}",
    ]
)
# Long ones are made when drawn, which keeps the strategy's repr (and statistics) short.
LONG_TOKENS = st.one_of(
    # Python turns at most 4300 digits into an int.
    st.sampled_from([4300, 5000]).map(lambda digits: "9" * digits),
    st.just(5000).map(lambda length: json.dumps("x" * length)),
)
SCALARS = st.one_of(
    ODD_TOKENS,
    LONG_TOKENS,
    st.integers().map(str),
    st.floats().map(json.dumps),  # NaN and Infinity included
    st.text(max_size=20).map(json.dumps),
    # Raw lone surrogates in the text: they become bytes that are not UTF-8.
    st.text(max_size=20).map(lambda text: json.dumps(text, ensure_ascii=False)),
)
FIELD_NAMES = [
    "id", "type", "label", "metadata", "options", "items", "source_url", "commit", "account",
    "external_id", "key", "payload", "stop_on_error", "max_failures", "atomic", "not_before",
    "deadline", "retention_days", "callback_url", "priority", "max_concurrency",
    "api-key", "batch-id", "job-type", "stop-on-job-error", "url", "accountId", "@type",
    "@context", "@id", "member", "origin", "providerSettingsId", "batchId", "counterpartyId",
    "tsaId", "processId",
]  # fmt: skip
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))


def _array(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    """Render an object from (key, JSON text) pairs; a key may come more than once."""
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in pairs) + "}"


JSON_TEXT = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5).map(_array)
        | st.lists(st.tuples(KEYS, children), max_size=5).map(_object)
    ),
    max_leaves=25,
)
NESTINGS = [("[", "]"), ('{"a": ', "}"), ('{"payload": [', "]}"), ('[{"x": ', "}]")]
DEEP_TEXT = st.builds(
    lambda depth, nesting, closed: (
        nesting[0] * depth + "1" + (nesting[1] * depth if closed else "")
    ),
    st.integers(min_value=1, max_value=3000),
    st.sampled_from(NESTINGS),
    st.booleans(),
)
VALUES = st.one_of(JSON_TEXT, DEEP_TEXT)


def fields_object(fields: list[str], known: dict[str, list[str]]) -> st.SearchStrategy[str]:
    """Return objects of the endpoint's fields (repeats allowed), each with any value."""

    def value_of(name: str) -> st.SearchStrategy[str]:
        choices = [VALUES]
        if known.get(name):
            choices.append(st.sampled_from(known[name]))
        if name == "options":
            choices.append(fields_object(OPTION_FIELDS, {}))
        if name in ("items", "member"):
            member_fields = ITEM_FIELDS if name == "items" else IMAGE_FIELDS
            choices.append(st.lists(fields_object(member_fields, known), max_size=3).map(_array))
        return st.one_of(*choices)

    pair = st.sampled_from(fields).flatmap(lambda name: st.tuples(st.just(name), value_of(name)))
    return st.lists(pair, max_size=len(fields) + 2).map(_object)


def encoded(text: str) -> bytes:
    """Encode as UTF-8, raw lone surrogates included (as bytes no UTF-8 decoder takes)."""
    return text.encode("utf-8", "surrogatepass")


def mangled(data: bytes) -> st.SearchStrategy[bytes]:
    """Return `data` cut short, or with a few random bytes put in somewhere."""
    at = st.integers(min_value=0, max_value=len(data))
    return st.one_of(
        at.map(lambda n: data[:n]),
        st.tuples(at, st.binary(min_size=1, max_size=8)).map(
            lambda cut: data[: cut[0]] + cut[1] + data[cut[0] :]
        ),
    )


def json_bodies(fields: list[str], known: dict[str, list[str]]) -> st.SearchStrategy[bytes]:
    texts = st.one_of(fields_object(fields, known), JSON_TEXT, DEEP_TEXT).map(encoded)
    return st.one_of(texts, texts.flatmap(mangled), st.binary(max_size=600))


JSON_CONTENT_TYPES = st.one_of(
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "application/json; charset=latin-1",
            "application/json; charset=bz2_codec",
            "application/json; charset=no-such-charset",
            "application/ld+json",
            "application/x-ndjson",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            f"multipart/form-data; boundary={BOUNDARY}",
            "application/octet-stream",
            "",
        ]
    ),
)
FORM_VALUES = st.one_of(st.text(max_size=30), VALUES)


def form_bodies(fields: list[str], known: dict[str, list[str]]) -> st.SearchStrategy:
    """Return (Content-Type, body) of urlencoded and multipart forms of the fields."""
    values = st.one_of(FORM_VALUES, *(st.sampled_from(v) for v in known.values() if v))
    pairs = st.lists(st.tuples(st.sampled_from(fields), values), max_size=len(fields) + 2)
    urlencoded = pairs.map(
        lambda found: ("application/x-www-form-urlencoded", urlencode(found).encode())
    )
    files = st.binary(max_size=200).map(lambda data: io.BytesIO(data))
    multipart = st.tuples(pairs, st.dictionaries(st.sampled_from(["file", "package"]), files))
    return st.one_of(
        urlencoded,
        multipart.map(
            lambda found: (
                f"multipart/form-data; boundary={BOUNDARY}",
                encode_multipart(BOUNDARY, {**dict(found[0]), **_named(found[1])}),
            )
        ),
    )


def _named(files: dict[str, io.BytesIO]) -> dict[str, io.BytesIO]:
    for name, file in files.items():
        file.name = f"{name}.zip"
    return files


def requests(fields: list[str], known: dict[str, list[str]]) -> st.SearchStrategy:
    """Return (Content-Type, body) pairs for an endpoint that reads `fields`."""
    return st.one_of(
        st.tuples(JSON_CONTENT_TYPES, json_bodies(fields, known)), form_bodies(fields, known)
    )


OPTION_FIELDS = [
    "stop_on_error", "max_failures", "atomic", "not_before", "deadline", "retention_days",
    "callback_url", "priority", "max_concurrency",
]  # fmt: skip
ITEM_FIELDS = ["external_id", "type", "key", "payload"]
IMAGE_FIELDS = ["id", "origin", "@id", "space", "string1"]

# --- files of items, hostile ----------------------------------------------------------------------

ITEM_TEXT = fields_object(ITEM_FIELDS, {"type": ['"echo"', '"test.stamp"']})
LINE_TEXT = st.one_of(ITEM_TEXT, JSON_TEXT, DEEP_TEXT, st.text(max_size=40))
JSONL_FILES = st.lists(LINE_TEXT, max_size=6).map(lambda lines: encoded("\n".join(lines)))
JSON_ARRAY_FILES = st.lists(st.one_of(ITEM_TEXT, JSON_TEXT, DEEP_TEXT), max_size=6).map(
    lambda elements: encoded(_array(elements))
)
CSV_COLUMNS = st.sampled_from(["external_id", "type", "key", "payload", "n", "a,b", '"q"', ""])
CSV_CELLS = st.one_of(st.text(max_size=12), JSON_TEXT, st.sampled_from(["1e999", "NaN", "-0"]))


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return encoded(out.getvalue())


CSV_FILES = st.tuples(
    st.lists(CSV_COLUMNS, min_size=1, max_size=5),
    st.lists(st.lists(CSV_CELLS, max_size=6), max_size=5),
).map(lambda table: _csv([table[0], *table[1]]))
MEMBER_NAMES = st.one_of(
    st.sampled_from(["a.txt", "../up.txt", "/abs.txt", "dir/", "dir/a.txt", "a\\b.txt", "a.p7s"]),
    # zipfile cuts a name at its first NUL and cannot write a name that leaves empty.
    st.text(min_size=1, max_size=12).filter(lambda name: name.split("\x00", 1)[0] != ""),
)


ZIP_FILES = st.lists(st.tuples(MEMBER_NAMES, st.binary(max_size=40)), max_size=4).map(zip_data)
FILES = st.one_of(JSONL_FILES, JSON_ARRAY_FILES, CSV_FILES, ZIP_FILES)
MULTIPART_PACKAGES = st.tuples(FILES, st.dictionaries(st.sampled_from(["tsaId", "x"]), FORM_VALUES))
FILE_BODIES = st.one_of(
    FILES,
    MULTIPART_PACKAGES.map(
        lambda sent: encode_multipart(
            BOUNDARY, {**sent[1], "file": _named({"package": io.BytesIO(sent[0])})["package"]}
        )
    ),
    FILES.flatmap(mangled),
    st.binary(max_size=600),
    st.binary(max_size=64).map(lambda tail: b"PK\x03\x04" + tail),
)
UPLOAD_CONTENT_TYPES = st.sampled_from(
    [
        "application/x-ndjson",
        "application/jsonl",
        "application/json",
        "application/json; charset=utf-16",
        "text/csv",
        "application/zip",
        "application/octet-stream",
        "text/plain",
        f"multipart/form-data; boundary={BOUNDARY}",
        "",
    ]
)
UPLOAD_PARAMETERS = st.fixed_dictionaries(
    {},
    optional={
        "on_error": st.sampled_from(["skip", "reject", "ignore", ""]),
        "dry_run": st.sampled_from(["1", "0", "true", "maybe"]),
        "csv_types": st.sampled_from(["string", "infer", "x"]),
        "payload": VALUES,
        "counterpartyId": FORM_VALUES,
    },
)

# --- the entry points -----------------------------------------------------------------------------


@dataclass
class Caller:
    """The account the requests come from, its key, and the WSGI application they go to;
    shared by a test's examples."""

    account: object
    key: str
    application: Callable

    def send(self, method: str, path: str, content_type: str, body: bytes, **environ):
        """Send one request through the whole stack; a crash outside any view raises here."""
        return wsgi_request(self.application, method, path, body, content_type, **environ)

    def batch(self, **fields):
        batch, _ = services.batch_create(account=self.account, actor="fuzz", **fields)
        return batch

    def ended_batch(self):
        batch = self.batch(items=[{"payload": {"fail": True}}, {"payload": {}}])
        services.batch_cancel(batch=batch, actor="fuzz")
        return batch


@dataclass
class Target:
    """Where a request goes: method, path, headers, and values worth trying for fields."""

    method: str
    path: str
    headers: dict[str, str]
    known: dict[str, list[str]]


def api_headers(caller: Caller) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Api-Key {caller.key}"}


def quoted(*values) -> list[str]:
    return [json.dumps(value) for value in values]


@dataclass
class EntryPoint:
    fields: list[str]
    target: Callable[[Caller], Target]


def api_create(caller: Caller) -> Target:
    known = {"type": quoted("echo", "test.stamp"), "account": [str(caller.account.number)]}
    return Target("POST", "/api/v1/batches/", api_headers(caller), known)


def api_items(caller: Caller) -> Target:
    batch = caller.batch(type="test.stamp")
    path = f"/api/v1/batches/{batch.id}/items/"
    return Target("POST", path, api_headers(caller), {"type": quoted("echo", "test.stamp")})


def api_file_item(caller: Caller) -> Target:
    batch = caller.batch(type="test.stamp")
    path = f"/api/v1/batches/{batch.id}/items/file/"
    return Target("POST", path, api_headers(caller), {"type": quoted("echo", "test.stamp")})


def api_rerun(caller: Caller) -> Target:
    path = f"/api/v1/batches/{caller.ended_batch().id}/rerun/"
    return Target("POST", path, api_headers(caller), {"items": quoted("all", "failed")})


def api_commit(caller: Caller) -> Target:
    batch = caller.batch(items=[{"payload": {}}])
    return Target("POST", f"/api/v1/batches/{batch.id}/commit/", api_headers(caller), {})


def brightlocal(method: str, path: str):
    def target(caller: Caller) -> Target:
        number = caller.batch().number
        query = urlencode({"api-key": caller.key, "batch-id": number})
        known = {
            "api-key": quoted(caller.key),
            "batch-id": [*quoted(str(number)), str(number)],
            "job-type": quoted("echo", "image.derive"),
        }
        return Target(method, f"/compat/brightlocal/seo-tools/api/v4/{path}?{query}", {}, known)

    return target


def centrapay_create(caller: Caller) -> Target:
    known = {
        "type": quoted("echo", "test.stamp"),
        "url": quoted("http://localhost/a.jsonl", "ftp://localhost/x", "http://elsewhere/"),
        "accountId": quoted(str(caller.account.number), caller.account.name),
    }
    headers = {"HTTP_X_API_KEY": caller.key}
    return Target("POST", "/compat/centrapay/api/batches", headers, known)


def dlcs_queue(caller: Caller) -> Target:
    known = {
        "@type": quoted("hydra:Collection"),
        "id": quoted("img-1", "img-2"),
        "origin": quoted("http://localhost/a.png", "file:///etc/passwd"),
    }
    path = f"/compat/dlcs/customers/{caller.account.number}/queue"
    return Target("POST", path, api_headers(caller), known)


def signing_create(caller: Caller) -> Target:
    process = ["1", "2", "3", "-1", "x", "9" * 30][caller.account.number % 6]
    path = f"/compat/signing/api/CreateBatch/{process}"
    return Target("POST", path, api_headers(caller), {"providerSettingsId": quoted("1", 7)})


def signing_accept(caller: Caller) -> Target:
    number = caller.batch(type="document.sign").number
    known = {"batchId": [str(number), *quoted(str(number))]}
    return Target(
        "POST", f"/compat/signing/api/AcceptBatch?batchId={number}", api_headers(caller), known
    )


def signing_accept_by_id(caller: Caller) -> Target:
    number = caller.batch(type="document.sign").number
    known = {"batchId": [str(number), *quoted(str(number), number + 1)]}
    return Target("POST", f"/compat/signing/api/AcceptBatch/{number}", api_headers(caller), known)


JSON_ENTRY_POINTS = {
    "api batch create": EntryPoint(
        ["id", "type", "label", "metadata", "options", "items", "source_url", "commit", "account"],
        api_create,
    ),
    "api items add": EntryPoint(ITEM_FIELDS, api_items),
    "api file item add": EntryPoint([*ITEM_FIELDS, "file"], api_file_item),
    "api rerun": EntryPoint(["items"], api_rerun),
    "api commit": EntryPoint(["items"], api_commit),
    "brightlocal batch create": EntryPoint(
        ["api-key", "stop-on-job-error"], brightlocal("POST", "batch")
    ),
    "brightlocal job add": EntryPoint(
        ["api-key", "batch-id", "job-type", "query", "fail"], brightlocal("POST", "batch/jobs")
    ),
    "brightlocal batch commit": EntryPoint(["api-key", "batch-id"], brightlocal("PUT", "batch")),
    "brightlocal batch results": EntryPoint(["api-key", "batch-id"], brightlocal("GET", "batch")),
    "brightlocal batch delete": EntryPoint(["api-key", "batch-id"], brightlocal("DELETE", "batch")),
    "centrapay batch create": EntryPoint(["type", "url", "accountId"], centrapay_create),
    "dlcs queue": EntryPoint(["@type", "@context", "member"], dlcs_queue),
    "signing batch create": EntryPoint(["providerSettingsId"], signing_create),
    "signing accept": EntryPoint(["batchId"], signing_accept),
    "signing accept by id": EntryPoint(["batchId"], signing_accept_by_id),
}


@pytest.fixture
def caller(wsgi_app, account, settings, tmp_path) -> Caller:
    settings.BATCHSITE_DATA_DIR = tmp_path / "data"
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    settings.BATCHSITE_THROTTLE_RATE = "0"
    settings.BATCHSITE_SIGNING_KEY = tmp_path / "signer" / "key.pem"
    settings.BATCHSITE_SIGNING_CERT = tmp_path / "signer" / "cert.pem"
    call_command("createsigningkey", stdout=io.StringIO())
    _, key = services.api_key_create(account=account, name="fuzz")
    return Caller(account=account, key=key, application=wsgi_app)


def assert_answered(response) -> None:
    """Assert the request was answered as a client's mistake or a success: no 5xx, no HTML."""
    assert response.status_code < 500, (response.status_code, response.content[:500])
    assert "html" not in response.headers.get("Content-Type", ""), response.content[:200]


@pytest.mark.parametrize("name", JSON_ENTRY_POINTS)
@fuzz_settings
@given(data=st.data())
def test_fuzz__no_body_makes_an_entry_point_answer_500(caller, name, data):
    entry = JSON_ENTRY_POINTS[name]
    target = entry.target(caller)
    content_type, body = data.draw(requests(entry.fields, target.known), label="request")

    response = caller.send(target.method, target.path, content_type, body, **target.headers)

    assert_answered(response)


def api_upload(caller: Caller, batch_type: str) -> str:
    return f"/api/v1/batches/{caller.batch(type=batch_type).id}/upload/"


def signing_upload(caller: Caller, batch_type: str) -> str:
    return f"/compat/signing/api/upload/{caller.batch(type=batch_type).number}"


UPLOADS = {"api upload": api_upload, "signing upload": signing_upload}


@pytest.mark.parametrize("name", UPLOADS)
@fuzz_settings
@given(
    batch_type=st.sampled_from(["echo", "test.stamp", "document.sign", "document.verify"]),
    content_type=UPLOAD_CONTENT_TYPES,
    body=FILE_BODIES,
    parameters=UPLOAD_PARAMETERS,
)
def test_fuzz__no_file_makes_an_upload_answer_500(
    caller, name, batch_type, content_type, body, parameters
):
    path = UPLOADS[name](caller, batch_type)
    if parameters:
        path = f"{path}?{urlencode(parameters)}"

    response = caller.send("POST", path, content_type, body, **api_headers(caller))

    assert_answered(response)
