"""Offer the browsable API to staff only; everyone else gets JSON whatever they accept."""

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer


class StaffOnlyBrowsableNegotiation(DefaultContentNegotiation):
    """Drop the browsable API renderer from the choices unless the user is staff."""

    def select_renderer(self, request, renderers, format_suffix=None):
        """Pick a renderer as usual, among those this user may have."""
        user = getattr(request, "user", None)
        if not (user is not None and user.is_authenticated and user.is_staff):
            renderers = [r for r in renderers if not isinstance(r, BrowsableAPIRenderer)]
        return super().select_renderer(request, renderers, format_suffix)


class SchemaNegotiation(StaffOnlyBrowsableNegotiation):
    """Let `?format=json|yaml` pick the schema's rendering, as drf-spectacular documents.

    Elsewhere `?format=` names export formats, so the project-wide override is off.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        """Use the `format` query parameter as the format, when given."""
        return super().select_renderer(
            request, renderers, format_suffix or request.query_params.get("format")
        )
