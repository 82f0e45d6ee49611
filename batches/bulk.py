"""Fast paths for writing many item rows at once.

Items come and go by the million, so these two writes skip the ORM's per-object work:
each value is serialized once and the rows go to the database in one executemany.
Everything else uses the ORM.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection

from batches.models import Item

EMPTY_LIST_JSON = "[]"


def json_text(value: Any) -> str:
    """Serialize a value as compact JSON; ValueError/TypeError if it is not JSON."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _json_placeholder() -> str:
    # psycopg sends Python strings as text; jsonb columns need the cast.
    return "%s::jsonb" if connection.vendor == "postgresql" else "%s"


def _table() -> str:
    return connection.ops.quote_name(Item._meta.db_table)


def items_insert(*, batch_id, rows: Iterable[Sequence[Any]]) -> None:
    """Insert pending items: rows of (index, external_id, key, type, payload JSON text)."""
    quote = connection.ops.quote_name
    json_value = _json_placeholder()
    columns = [
        "batch_id", "index", "external_id", "key", "type", "payload", "input_file",
        "status", "output_files", "error_code", "error_message", "attempts",
    ]  # fmt: skip
    values = ["%s"] * 5 + [json_value, "%s", "%s", json_value, "%s", "%s", "%s"]
    values[5] = json_value
    sql = (
        f"INSERT INTO {_table()} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(values)})"
    )
    batch_value = Item._meta.get_field("batch").get_db_prep_value(batch_id, connection)
    params = [
        (batch_value, index, external_id, key, type_name, payload, "",
         Item.Status.PENDING, EMPTY_LIST_JSON, "", "", 0)
        for index, external_id, key, type_name, payload in rows
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def outcomes_write(rows: Iterable[Sequence[Any]]) -> None:
    """Store item outcomes of running items.

    Rows are (status, result JSON text or None, error_code, error_message, attempts,
    output_files JSON text, finished_at, seq, item id).
    """
    json_value = _json_placeholder()
    sql = (
        f"UPDATE {_table()} SET status = %s, result = {json_value}, error_code = %s, "
        f"error_message = %s, attempts = %s, output_files = {json_value}, finished_at = %s, "
        "seq = %s WHERE id = %s AND status = %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    params = [(*row[:6], adapt(row[6]), row[7], row[8], Item.Status.RUNNING) for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
