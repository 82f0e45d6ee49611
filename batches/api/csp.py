"""Send the site's Content-Security-Policy, letting the browsable API's pages style inline.

DRF's browsable API templates set `style` attributes (floats, widths), which the site's
policy (`style-src 'self'`) refuses. Its pages are for staff and styles cannot run code, so
they alone may have inline styles; their scripts stay as strict as everywhere else.
"""

from __future__ import annotations

from csp.constants import SELF, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from rest_framework.renderers import BrowsableAPIRenderer

BROWSABLE_API_UPDATE = {"style-src": [SELF, UNSAFE_INLINE]}


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the browsable API's allowance for inline styles."""

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        """Return the policy for this response; relax styles on browsable API pages."""
        parts = super().get_policy_parts(request, response, report_only)
        if isinstance(getattr(response, "accepted_renderer", None), BrowsableAPIRenderer):
            parts.update = {**(parts.update or {}), **BROWSABLE_API_UPDATE}
        return parts
