"""Limit how many requests each API key (or staff user, or client address) makes.

Also limit how many bad API keys each client address may present, so keys cannot be guessed
at the rate the request throttle allows.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache as default_cache
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

from batches.models import ApiKey

DISABLED_RATES = frozenset({"", "0"})


def client_address(request) -> str:
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


def window_count_add(cache, key: str, *, timeout: int, duration: float) -> int:
    """Add one to the counter `key` of a fixed window in `cache`; return the new count.

    `timeout` is the seconds left in the window, `duration` its whole length.
    """
    if cache.add(key, 1, timeout):
        return 1
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: a new window began
        cache.set(key, 1, timeout)
        return 1
    if duration > cache.default_timeout:
        # Backends without a native increment (file, database) write the new value with
        # the default timeout, which would end a long window early.
        cache.touch(key, timeout)
    return count


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
    # Set by SimpleRateThrottle.__init__ from the rate (DRF's stubs leave them out); read
    # only when there is a rate.
    num_requests: int
    duration: int

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
        """Return the client address (see client_address)."""
        return client_address(request)

    def allow_request(self, request, view) -> bool:
        """Count this request in the caller's current window; refuse it over the rate."""
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_end = (window + 1) * self.duration
        timeout = max(1, int(self.window_end - self.now) + 1)
        count = window_count_add(
            self.cache, f"{self.key}:{window}", timeout=timeout, duration=self.duration
        )
        return count <= self.num_requests

    def wait(self) -> float:
        """Return the seconds until the caller's window ends and its count starts again."""
        return max(self.window_end - self.now, 0.0)


class AuthFailureThrottle:
    """Allow each client address BATCHSITE_AUTH_FAILURES_PER_MINUTE bad API keys per minute.

    The request throttle cannot see these: a bad key fails authentication, which DRF runs
    before any throttle. So api_key_check, where every way of presenting a key ends, asks
    this first and tells it about each key that did not match.

    Once an address has used up its failures, every key it presents is refused with 429
    until the minute's window ends, a valid one too: otherwise a guesser would learn from
    the answers which guess was right. Keys presented from other addresses are unaffected,
    and so are staff sessions. Like the request throttle it is a fixed window in the shared
    cache, so an address may fail up to twice the limit across a window boundary.
    """

    duration = 60
    cache = default_cache
    cache_format = "throttle_auth_failures_%(ident)s"
    timer = staticmethod(time.time)

    def __init__(self, request):
        self.limit: int = settings.BATCHSITE_AUTH_FAILURES_PER_MINUTE
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_end = (window + 1) * self.duration
        ident = self.cache_format % {"ident": client_address(request)}
        self.key = f"{ident}:{window}"

    def check(self) -> None:
        """Raise Throttled while the address has no failures left in this window."""
        if self.limit > 0 and (self.cache.get(self.key) or 0) >= self.limit:
            raise Throttled(
                wait=max(self.window_end - self.now, 0.0),
                detail="Too many invalid API keys from this address.",
            )

    def failure_record(self) -> None:
        """Count one bad key against the address."""
        if self.limit > 0:
            timeout = max(1, int(self.window_end - self.now) + 1)
            window_count_add(self.cache, self.key, timeout=timeout, duration=self.duration)
