"""Fill a new batch with images fetched from their origin URLs, then commit it.

A stand-in for a service batchsite does not have yet (adding file items from URLs): the
origins are fetched in the request through batches.sources.download (the outbound guard,
the upload size cap, the source timeout), all before anything is written, so a refused
or unreadable origin leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from batches import services
from batches.exceptions import InvalidInput, TooLarge
from batches.models import Batch
from batches.sources import SourceUnreadable, download


def images_from_origins(*, batch: Batch, members: list[dict[str, Any]], actor: str) -> Batch:
    """Add every member's image (its `id` and `origin`) to a new batch and commit it.

    All or nothing: if any origin is refused or cannot be read, or an image cannot be
    added, the batch, which must be new and empty, is deleted and the error raised again
    (InvalidInput for an origin, naming the image).
    """
    fetched: list[tuple[dict[str, Any], Path]] = []
    try:
        for index, member in enumerate(members):
            try:
                path, _ = download(member["origin"])
            except (SourceUnreadable, TooLarge) as exc:
                message = getattr(exc, "message", str(exc))
                raise InvalidInput(
                    f"image {member['id']!r} cannot be fetched from its origin: {message}",
                    errors=[
                        {
                            "index": index,
                            "external_id": member["id"],
                            "field": "origin",
                            "message": message,
                        }
                    ],
                ) from exc
            fetched.append((member, path))
        with transaction.atomic():
            for member, path in fetched:
                with open(path, "rb") as image:
                    services.item_add_file(
                        batch=batch,
                        upload=image,
                        name=member["id"],
                        size=path.stat().st_size,
                        actor=actor,
                        external_id=member["id"],
                        key=member["id"],
                    )
            return services.batch_commit(batch=batch, actor=actor)
    except Exception:
        services.batch_delete(batch=batch, actor=actor)
        raise
    finally:
        for _, path in fetched:
            path.unlink(missing_ok=True)
