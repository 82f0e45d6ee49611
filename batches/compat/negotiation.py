"""Content negotiation for dialects whose clients send whatever Accept header they like."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class AnyAcceptNegotiation(DefaultContentNegotiation):
    """Answer in the view's first media type whatever the client says it accepts."""

    def select_renderer(self, request, renderers, format_suffix=None):
        """Pick as usual, falling back to the first renderer instead of 406."""
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type
