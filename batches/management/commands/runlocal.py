"""Run batchsite on one machine: migrate, print a demo key, serve web + one worker cluster."""

import io
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from batches import services
from batches.models import Account
from jobs import job_types
from jobs.signer import signer_paths

DEMO_ACCOUNT = "demo"
DEMO_STAFF_USER = "admin"
DEMO_SIGNER = "batchsite demo signer"
# Hosts that mean "every interface": served there, browsed at the loopback address.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def host_in_url(host: str) -> str:
    """Return the host as it goes in a URL or runserver's address (IPv6 in brackets)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]" if literal.version == 6 else host


def served_addresses(host: str, port: int) -> tuple[str, str]:
    """Return runserver's ADDR:PORT and the base URL to browse for a host and port."""
    browse = WILDCARD_HOSTS.get(host, host)
    return f"{host_in_url(host)}:{port}", f"http://{host_in_url(browse)}:{port}"


class Command(BaseCommand):
    help = (
        "Migrate, create the demo account and a fresh API key for it, give the staff user "
        "'admin' a fresh password, make a demo signing key if there is none, then run the web "
        "server and one django-q2 cluster in the foreground until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to serve on (default 127.0.0.1; 0.0.0.0 or :: for every interface)",
        )
        parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
        parser.add_argument(
            "--no-serve", action="store_true", help="set up and print the key, then exit"
        )

    def handle(self, *args, host, port, no_serve, **options):
        host = host.strip().strip("[]")
        if not host:
            raise CommandError("--host must name an address, e.g. 127.0.0.1 or 0.0.0.0")
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be from 1 to 65535, not {port}")
        addr, base = served_addresses(host, port)
        call_command("migrate", interactive=False, verbosity=0)
        account = Account.objects.filter(name=DEMO_ACCOUNT).first()
        if account is None:
            account = services.account_create(name=DEMO_ACCOUNT)
        _, raw = services.api_key_create(account=account, name="make run")
        password = self._staff_login()
        signer = self._demo_signer()
        self.stdout.write(
            f"""
batchsite is starting on {base}/  (API docs: {base}/api/v1/docs/)
{self._reach(host, port)}Database: {settings.DATABASES["default"]["NAME"]}
{signer}{self._unready_types()}
Dashboard login (a new password each run): {base}/

    user: {DEMO_STAFF_USER}
    password: {password}

API key of the '{DEMO_ACCOUNT}' account (shown once; each run makes a new one):

    export BATCHSITE_URL={base}
    export BATCHSITE_KEY={raw}

Try it:

    curl -s -X POST $BATCHSITE_URL/api/v1/batches/ -H "Authorization: Api-Key $BATCHSITE_KEY" \\
         -H 'Content-Type: application/json' \\
         -d '{{"items": [{{"payload": {{"hello": "world"}}}}], "commit": true}}'

Press Ctrl-C to stop.
"""
        )
        self.stdout.flush()
        if no_serve:
            return
        manage = str(settings.BASE_DIR / "manage.py")
        children = [
            subprocess.Popen(
                [sys.executable, manage, "runserver", "--noreload", addr],
                env=self._web_env(host),
            ),
            subprocess.Popen([sys.executable, manage, "qcluster"]),
        ]
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("batchsite stopped.")
        if not stopping:
            sys.exit(1)

    def _reach(self, host: str, port: int) -> str:
        """Say how other machines reach a server listening on every interface."""
        if host not in WILDCARD_HOSTS:
            return ""
        return (
            f"Listening on every interface ({host_in_url(host)}:{port}); from another machine "
            "use this one's name, after adding it to DJANGO_ALLOWED_HOSTS.\n"
        )

    def _web_env(self, host: str) -> dict[str, str]:
        """Return the web server's environment: the one host it serves on is allowed too."""
        env = dict(os.environ)
        name = host_in_url(host)
        allowed = settings.ALLOWED_HOSTS
        if host in WILDCARD_HOSTS or name in allowed or "DJANGO_ALLOWED_HOSTS" in env:
            return env
        env["DJANGO_ALLOWED_HOSTS"] = ",".join([*allowed, name])
        return env

    def _demo_signer(self) -> str:
        """Make a signing key when there is none, so document.sign works; say so if it did.

        An existing key (or half of one) is left alone: replacing a signer is for
        `createsigningkey --force`, on purpose.
        """
        key, certificate = signer_paths()
        if key.exists() or certificate.exists():
            return ""
        call_command("createsigningkey", "--common-name", DEMO_SIGNER, stdout=io.StringIO())
        return f"Made a demo signing key for document.sign: {key}\n"

    def _unready_types(self) -> str:
        """Name the job types whose items would be refused, and what they need."""
        lines = [
            f"Not ready: {name}: {message}\n"
            for name, job_type in sorted(job_types().items())
            if (message := job_type.readiness())
        ]
        return "".join(lines)

    def _staff_login(self) -> str:
        """Create the demo staff user, or reset its password; return the new password."""
        user, _ = get_user_model().objects.get_or_create(username=DEMO_STAFF_USER)
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.save()
        return password
