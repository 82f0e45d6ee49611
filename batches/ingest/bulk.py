"""Fast paths for writing many item rows at once.

Items come and go by the million, so these two writes skip the ORM's per-object work:
each value is serialized once and the rows go to the database in one executemany.
Everything else uses the ORM.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
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
# PostgreSQL array types of the columns, for the one-statement unnest() forms.
PG_INSERT_TYPES = [
    "uuid", "integer", "text", "text", "text", "jsonb", "text",
    "bigint", "text", "jsonb", "text", "text", "integer",
]  # fmt: skip
OUTCOME_COLUMNS = [
    "status", "result", "error_code", "error_message", "attempts", "output_files",
    "finished_at", "seq", "id",
]  # fmt: skip
PG_OUTCOME_TYPES = [
    "text", "jsonb", "text", "text", "integer", "jsonb", "timestamptz", "bigint", "bigint",
]  # fmt: skip


def items_insert(*, batch_id: uuid.UUID, rows: Iterable[Sequence[Any]]) -> None:
    """Insert pending items.

    Rows are (index, external_id, key, type, payload JSON text, input file path), with the
    item's index in the file it came from as a seventh value when it came from one.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(quote(column) for column in ITEM_INSERT_COLUMNS)
    batch_value = Item._meta.get_field("batch").get_db_prep_value(batch_id, connection)
    params = [
        (batch_value, index, external_id, key, type_name, payload, input_file,
         source[0] if source else None, Item.Status.PENDING, EMPTY_LIST_JSON, "", "", 0)
        for index, external_id, key, type_name, payload, input_file, *source in rows
    ]  # fmt: skip
    if not params:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement of arrays instead of one INSERT per row.
            arrays = ", ".join(f"%s::{kind}[]" for kind in PG_INSERT_TYPES)
            sql = f"INSERT INTO {_table()} ({columns}) SELECT * FROM unnest({arrays})"
            cursor.execute(sql, [list(column) for column in zip(*params, strict=True)])
        else:
            values = ", ".join(["%s"] * len(ITEM_INSERT_COLUMNS))
            cursor.executemany(f"INSERT INTO {_table()} ({columns}) VALUES ({values})", params)


def outcomes_write(
    *, batch_id: uuid.UUID, first_index: int, last_index: int, rows: list[Sequence[Any]]
) -> None:
    """Store outcomes of running items whose indexes lie in [first_index, last_index].

    Rows are (status, result JSON text or None, error_code, error_message, attempts,
    output_files JSON text, finished_at, seq, item id).
    """
    if connection.vendor == "postgresql":
        params = [list(column) for column in zip(*rows, strict=True)]
        if not params:
            return
        quote = connection.ops.quote_name
        arrays = ", ".join(f"%s::{kind}[]" for kind in PG_OUTCOME_TYPES)
        assignments = ", ".join(f"{quote(c)} = v.{quote(c)}" for c in OUTCOME_COLUMNS[:-1])
        sql = (
            f"UPDATE {_table()} AS i SET {assignments} "
            f"FROM unnest({arrays}) AS v({', '.join(quote(c) for c in OUTCOME_COLUMNS)}) "
            # The batch and index range pin the plan to the (batch, index) index; joined on
            # id alone, a planner with stale statistics may scan the whole table.
            "WHERE i.id = v.id AND i.status = %s AND i.batch_id = %s "
            "AND i.index BETWEEN %s AND %s"
        )
        batch_value = Item._meta.get_field("batch").get_db_prep_value(batch_id, connection)
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [*params, Item.Status.RUNNING, batch_value, first_index, last_index]
            )
        return
    sql = (
        f"UPDATE {_table()} SET status = %s, result = %s, error_code = %s, "
        "error_message = %s, attempts = %s, output_files = %s, finished_at = %s, "
        "seq = %s WHERE id = %s AND status = %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    updates = [(*row[:6], adapt(row[6]), row[7], row[8], Item.Status.RUNNING) for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, updates)
