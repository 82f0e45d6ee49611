"""Run inside a fresh network namespace: does the guard connect to the address it checked?

`test_outbound_edge` starts this under `unshare --net`. Here the namespace's loopback also
carries a public address, with an HTTP server on it and another on 127.0.0.1, so neither
answer of a rebinding name leaves the namespace. A stub resolver answers the name with the
public address first and with 127.0.0.1 after. Prints, as JSON, which servers were asked
and what the fetch came to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import django

PUBLIC = "93.184.216.34"
NAME = "rebind.example"


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{PUBLIC}/32", "dev", "lo"], check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from django.conf import settings

    from jobs import outbound

    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["*.example"]
    reached: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            reached.append(self.server.server_address[0])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    outside = ThreadingHTTPServer((PUBLIC, 0), Handler)
    port = outside.server_address[1]
    inside = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    for server in (outside, inside):
        threading.Thread(target=server.serve_forever, daemon=True).start()

    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = PUBLIC if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    socket.getaddrinfo = getaddrinfo
    outcome = "fetched"
    try:
        with (
            outbound.Client(timeout=5) as client,
            outbound.fetch(client, "GET", f"http://{NAME}:{port}/") as response,
        ):
            response.read()
    except outbound.OutboundRefused as exc:
        outcome = f"refused: {exc}"
    finally:
        for server in (outside, inside):
            server.shutdown()
    print(json.dumps({"reached": reached, "lookups": len(lookups), "outcome": outcome}))


if __name__ == "__main__":
    sys.exit(main())
