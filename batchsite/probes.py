"""Answer load balancers' and orchestrators' probes: `/healthz` and `/readyz`.

`/healthz` says the process answers; `/readyz` says it can do its work: the database and
the broker answer. Neither looks at workers: a web pod must not go unready because no
worker runs (`manage.py workercheck` is the workers' own probe).

Probes come by address (a kubelet sends the pod IP as Host, a load balancer the
instance's), which is in no ALLOWED_HOSTS. ProbeMiddleware answers these paths itself,
before anything validates the Host header, so a probe is answered whatever its Host while
every other request stays under ALLOWED_HOSTS. Neither answer reads the Host header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer that the process is up, without touching the database."""
    return JsonResponse({"status": "ok"})


def database_check() -> bool:
    """Return True when the database answers a trivial query."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def broker_check() -> bool:
    """Return True when the django-q2 broker answers a ping (always, for the ORM broker)."""
    from django_q.brokers import get_broker

    return bool(get_broker().ping())


READINESS_CHECKS = {
    "database": database_check,
    "broker": broker_check,
}


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database and the broker answer, else 503.

    Load balancers call this without credentials, so the body names the checks and
    whether each passed, never why one failed; the reason goes to the log.
    """
    checks = {}
    for name, check in READINESS_CHECKS.items():
        try:
            passed = check()
        except Exception:
            logger.warning("readiness check %s raised", name, exc_info=True)
            passed = False
        checks[name] = "ok" if passed else "failed"
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


# The probe paths, with and without the trailing slash: a probe is never redirected.
PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz/": healthz,
    "/healthz": healthz,
    "/readyz/": readyz,
    "/readyz": readyz,
}


class ProbeMiddleware:
    """Answer the probe paths directly, so no later middleware validates their Host header.

    It goes after SecurityMiddleware, which reads the Host only to redirect to HTTPS and
    exempts these paths (SECURE_REDIRECT_EXEMPT), so probes keep its headers and the
    Content-Security-Policy; CommonMiddleware, which validates every Host, comes later.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Serve a probe path with its view; pass every other request on."""
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        return probe(request)
