"""Fast paths for writing many item rows at once.

Items come and go by the million, so these two writes skip the ORM's per-object work:
each value is serialized once, and the rows go to the database in one statement (COPY or
an UPDATE from one JSON document on PostgreSQL, one executemany on SQLite). Everything
else uses the ORM.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from batches.models import Item

EMPTY_LIST_JSON = "[]"


# Not ASCII-escaped: smaller, faster, and lone surrogates then fail the UTF-8 check in
# ingest.storable_problem instead of reaching the database.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def json_text(value: Any) -> str:
    """Serialize a value as compact JSON; ValueError/TypeError if it is not JSON."""
    return _ENCODER.encode(value)


def _table() -> str:
    return connection.ops.quote_name(Item._meta.db_table)


ITEM_INSERT_COLUMNS = [
    "batch_id", "index", "external_id", "key", "type", "payload", "input_file",
    "source_index", "status", "output_files", "error_code", "error_message", "attempts",
]  # fmt: skip
# On PostgreSQL outcomes travel as one JSON array of arrays, read back column by column
# with these types: one parameter whose encoding is one call of the C JSON encoder. (Lists
# of values, one array parameter per column, cost psycopg ~1 µs of Python per value.)
# Values that are JSON text already travel as strings and are parsed on the server.
OUTCOME_COLUMNS = [
    "status", "result", "error_code", "error_message", "attempts", "output_files",
    "finished_at", "seq", "id",
]  # fmt: skip
PG_OUTCOME_TYPES = [
    "text", "jsonb", "text", "text", "integer", "jsonb", "timestamptz", "bigint", "bigint",
]  # fmt: skip
# An outcome is written over an item a worker took: `queued`, or `running` if its slice
# was marked so (see ChunkRunner.mark_running).
TAKEN = (Item.Status.QUEUED.value, Item.Status.RUNNING.value)


def _pg_columns(types: Sequence[str]) -> list[str]:
    """Return the SQL that reads each column of a row `r` of json_array_elements."""
    return [f"(r->>{n})::{kind}" for n, kind in enumerate(types)]


def items_insert(*, batch_id: uuid.UUID, rows: Iterable[Sequence[Any]]) -> None:
    """Insert pending items.

    Rows are (index, external_id, key, type, payload JSON text, input file path), with the
    item's index in the file it came from as a seventh value when it came from one.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in ITEM_INSERT_COLUMNS)
    batch_value = Item._meta.get_field("batch").get_db_prep_value(batch_id, connection)
    pending = Item.Status.PENDING.value
    # A generator: rows reach the database as `rows` yields them, so the server stores the
    # first while the caller makes the next.
    params = (
        (batch_value, index, external_id, key, type_name, payload, input_file,
         source[0] if source else None, pending, EMPTY_LIST_JSON, "", "", 0)
        for index, external_id, key, type_name, payload, input_file, *source in rows
    )  # fmt: skip
    if connection.vendor == "postgresql":
        # COPY, whose rows psycopg formats in C and sends every 32 KiB: the fastest way in.
        sql = f"COPY {_table()} ({columns}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in params:
                copy.write_row(row)
        return
    placeholders = ", ".join(["%s"] * len(ITEM_INSERT_COLUMNS))
    with connection.cursor() as cursor:
        # One writer at a time: nothing would store rows while the caller makes more.
        sql = f"INSERT INTO {_table()} ({columns}) VALUES ({placeholders})"
        cursor.executemany(sql, list(params))


@dataclass(frozen=True)
class Statement:
    """One statement and its parameters, made ready before the transaction that runs it."""

    sql: str
    params: Sequence[Any]
    many: bool = False  # params is a list of parameter rows for executemany

    def run(self) -> None:
        with connection.cursor() as cursor:
            if self.many:
                cursor.executemany(self.sql, self.params)
            else:
                cursor.execute(self.sql, self.params)


def outcomes_update(
    *,
    batch_id: uuid.UUID,
    first_index: int,
    last_index: int,
    started_at: datetime,
    rows: list[Sequence[Any]],
) -> Statement:
    """Return the statement that stores outcomes of taken items in [first_index, last_index].

    Rows are (status, result JSON text or None, error_code, error_message, attempts,
    output_files JSON text, finished_at, seq, item id). Items not marked running get
    `started_at`, when their slice was taken. Every value is encoded here, so a worker
    runs the statement without spending its write transaction on Python.
    """
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        values = _pg_columns(PG_OUTCOME_TYPES)
        assignments = ", ".join(
            f"{quote(column)} = {value}"
            for column, value in zip(OUTCOME_COLUMNS[:-1], values, strict=False)
        )
        sql = (
            f"UPDATE {_table()} AS i SET {assignments}, "
            "started_at = COALESCE(i.started_at, %s) "
            "FROM json_array_elements(%s::json) AS r "
            # The batch and index range pin the plan to the (batch, index) index; joined on
            # id alone, a planner with stale statistics may scan the whole table.
            f"WHERE i.id = {values[-1]} AND i.status IN (%s, %s) AND i.batch_id = %s "
            "AND i.index BETWEEN %s AND %s"
        )
        document = json_text([(*row[:6], row[6].isoformat(), *row[7:]) for row in rows])
        batch_value = Item._meta.get_field("batch").get_db_prep_value(batch_id, connection)
        return Statement(sql, [started_at, document, *TAKEN, batch_value, first_index, last_index])
    sql = (
        f"UPDATE {_table()} SET status = %s, result = %s, error_code = %s, "
        "error_message = %s, attempts = %s, output_files = %s, finished_at = %s, "
        "started_at = COALESCE(started_at, %s), seq = %s WHERE id = %s AND status IN (%s, %s)"
    )
    taken_at = _sqlite_datetime(started_at)
    updates = [
        (*row[:6], _sqlite_datetime(row[6]), taken_at, row[7], row[8], *TAKEN) for row in rows
    ]
    return Statement(sql, updates, many=True)


def _sqlite_datetime(value: datetime) -> Any:
    """Return what Django stores on SQLite for a datetime; aware UTC times (timezone.now())
    at a third of the cost of its general adaptation."""
    if value.tzinfo is UTC and connection.timezone_name == "UTC":
        return str(value.replace(tzinfo=None))
    return connection.ops.adapt_datetimefield_value(value)


def slice_read(*, batch_id: uuid.UUID, start: int, end: int, limit: int) -> list[dict[str, Any]]:
    """Read the next queued or running items of [start, end) a worker runs, by index.

    Returns dicts of id, index, status, external_id, type, payload (decoded), input_file
    and attempts. Plain SQL: the ORM's per-row work was a tenth of a worker's time.
    """
    quote = connection.ops.quote_name
    columns = ["id", "index", "status", "external_id", "type", "payload", "input_file",
               "attempts"]  # fmt: skip
    sql = (
        f"SELECT {', '.join(quote(column) for column in columns)} FROM {_table()} "
        f"WHERE batch_id = %s AND {quote('index')} >= %s AND {quote('index')} < %s "
        f"AND status IN (%s, %s) ORDER BY {quote('index')} LIMIT %s"
    )
    batch_value = Item._meta.get_field("batch").get_db_prep_value(batch_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [batch_value, start, end, *TAKEN, limit])
        rows = cursor.fetchall()
    loads = json.loads
    return [
        {"id": item_id, "index": index, "status": status, "external_id": external_id,
         "type": type_name, "payload": loads(payload) if isinstance(payload, str) else payload,
         "input_file": input_file, "attempts": attempts}
        for item_id, index, status, external_id, type_name, payload, input_file, attempts
        in rows
    ]  # fmt: skip
