"""Limit how many requests each API key (or staff user, or client address) makes."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from batches.models import ApiKey

DISABLED_RATES = frozenset({"", "0"})


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Allow each caller BATCHSITE_THROTTLE_RATE requests per window, in the shared cache.

    A caller is the API key a request presents (so every way of presenting a key, the
    dialects' included, shares one budget), else the staff user of a session, else the
    client address.

    The count is a fixed-window counter, not DRF's sliding log: the log keeps one timestamp
    per request in the window and rewrites it on every request (6,000 timestamps, about
    8 ms of pickling a request at the default rate), where a counter is one atomic
    increment in Redis. The price is that a caller may send up to twice the rate across a
    window boundary.
    """

    scope = "api"

    def get_rate(self) -> str | None:
        """Return the rate from the settings on every request, so changing them takes effect."""
        rate = (getattr(settings, "BATCHSITE_THROTTLE_RATE", "") or "").strip()
        return None if rate in DISABLED_RATES else rate

    def get_cache_key(self, request, view) -> str:
        """Name the caller's bucket: its API key, else its staff user, else its address."""
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.prefix}"
        elif request.user is not None and request.user.is_authenticated and request.user.pk:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def get_ident(self, request) -> str:
        """Return the client address; behind a proxy, the one the proxy added to X-Forwarded-For.

        DRF's default trusts the whole header when NUM_PROXIES is unset, which lets any
        client pick a fresh bucket per request; only the last address is the proxy's word.
        """
        if settings.BATCHSITE_BEHIND_PROXY:
            forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                return last
        return request.META.get("REMOTE_ADDR", "")

    def allow_request(self, request, view) -> bool:
        """Count this request in the caller's current window; refuse it over the rate."""
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_end = (window + 1) * self.duration
        key = f"{self.key}:{window}"
        timeout = max(1, int(self.window_end - self.now) + 1)
        if self.cache.add(key, 1, timeout):
            count = 1
        else:
            try:
                count = self.cache.incr(key)
            except ValueError:  # expired between add and incr: a new window began
                self.cache.set(key, 1, timeout)
                count = 1
            if self.duration > self.cache.default_timeout:
                # Backends without a native increment (file, database) write the new value
                # with the default timeout, which would end a long window early.
                self.cache.touch(key, timeout)
        return count <= self.num_requests

    def wait(self) -> float:
        """Return the seconds until the caller's window ends and its count starts again."""
        return max(self.window_end - self.now, 0.0)
