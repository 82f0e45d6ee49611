"""Pagination: pages for batch lists, stable cursors for the long lists inside a batch."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination

from batches.exceptions import InvalidInput


class BatchPagination(PageNumberPagination):
    """Numbered pages of batches, newest first."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class StrictCursorPagination(CursorPagination):
    """A cursor pagination that answers a garbled cursor with 400, not 404."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def decode_cursor(self, request):
        """Decode the cursor, turning DRF's NotFound for a bad one into InvalidInput."""
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise InvalidInput.for_field(
                self.cursor_query_param, str(exc), detail="invalid cursor"
            ) from exc


class IndexCursorPagination(StrictCursorPagination):
    """Cursor pages of items in index order; stable however many items are added or end."""

    ordering = "index"


class IdCursorPagination(StrictCursorPagination):
    """Cursor pages in insertion order, for errors and events."""

    ordering = "id"
