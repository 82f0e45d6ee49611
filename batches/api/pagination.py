"""Pagination: pages for batch lists, stable cursors for the long lists inside a batch."""

from rest_framework.pagination import CursorPagination, PageNumberPagination


class BatchPagination(PageNumberPagination):
    """Numbered pages of batches, newest first."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class IndexCursorPagination(CursorPagination):
    """Cursor pages of items in index order; stable however many items are added or end."""

    ordering = "index"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class IdCursorPagination(CursorPagination):
    """Cursor pages in insertion order, for errors and events."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
