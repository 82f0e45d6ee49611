"""Running totals of ended items, so the processed-items metrics never go down.

The metrics read ended items of active batches from the item table, and everything else
from here: a batch's totals are written when it ends (its items are then counted here,
not scanned), kept when it is deleted (folded into the retired rows) and kept for the
items a rerun resets. See batches.tallies for who writes them and batchsite.observability
for who reads them.
"""

from __future__ import annotations

import uuid

from django.db import models

# Upper bounds (seconds) of the item duration histogram's buckets; +Inf is `timed`. Each
# has a column (`le_<n>`): changing them needs a migration, and resets the histogram.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
BUCKET_FIELDS = tuple(f"le_{n}" for n in range(len(DURATION_BUCKETS)))
# The batch id of the rows that hold the totals of deleted batches.
RETIRED = uuid.UUID(int=0)


class ItemTally(models.Model):
    """How many items of one batch, type and outcome ended, and how long they ran.

    `batch_id` is no foreign key: a batch's totals outlive it (a deletion folds them into
    the RETIRED rows, and any other path that removes a batch still leaves them counted).
    """

    batch_id = models.UUIDField()
    type = models.CharField(max_length=100)
    outcome = models.CharField(max_length=16)
    items = models.BigIntegerField(default=0)
    # Items with a duration (started before they ended), and the sum of those durations.
    timed = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    # Timed items that took at most DURATION_BUCKETS[n] seconds (cumulative, as Prometheus').
    le_0 = models.BigIntegerField(default=0)
    le_1 = models.BigIntegerField(default=0)
    le_2 = models.BigIntegerField(default=0)
    le_3 = models.BigIntegerField(default=0)
    le_4 = models.BigIntegerField(default=0)
    le_5 = models.BigIntegerField(default=0)
    le_6 = models.BigIntegerField(default=0)
    le_7 = models.BigIntegerField(default=0)
    le_8 = models.BigIntegerField(default=0)
    le_9 = models.BigIntegerField(default=0)
    le_10 = models.BigIntegerField(default=0)
    le_11 = models.BigIntegerField(default=0)
    le_12 = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["batch_id", "type", "outcome"], name="itemtally_batch_type_outcome"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.items} {self.type} {self.outcome} in {self.batch_id}"
