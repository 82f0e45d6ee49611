"""Django admin for the batch domain: look at everything, change state only through services.

Importing the modules registers their ModelAdmins; Django autodiscovers this package.
"""

from __future__ import annotations

from batches.admin.batches import BatchAdmin

__all__ = ["BatchAdmin"]
