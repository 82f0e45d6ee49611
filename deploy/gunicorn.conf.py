"""gunicorn's settings for batchsite: `gunicorn -c deploy/gunicorn.conf.py batchsite.wsgi`.

What a deployment changes comes from the environment, as the app's settings do (every
variable is in deploy/.env.example and the README's configuration table):

- BATCHSITE_BIND: comma list of addresses to listen on (default 127.0.0.1:8000; e.g.
  `0.0.0.0:8000` for a load balancer to reach, `unix:/run/batchsite/web.sock`).
- BATCHSITE_WEB_WORKERS: processes; default 2 x CPUs + 1, at most 8 (each holds database
  connections). BATCHSITE_WEB_THREADS: threads per process (default 2).
- BATCHSITE_WEB_TIMEOUT: seconds a silent worker lives before it is restarted (default 120).

Access lines go to stdout and error lines to stderr, both through batchsite's logging: the
format BATCHSITE_LOG_FORMAT picks, and the filter that blanks API keys out of request
lines (batchsite.logging).
"""

import os
import sys
from pathlib import Path

# The project's root: `batchsite` imports, and relative paths resolve, wherever gunicorn starts.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from batchsite.env import env_choice, env_int, env_list  # noqa: E402
from batchsite.logging import LOG_FORMATS, gunicorn_logging_config  # noqa: E402


def _cpus() -> int:
    """Return the CPUs this process may run on (its affinity, not the whole machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


chdir = str(ROOT)
wsgi_app = "batchsite.wsgi"
bind = env_list("BATCHSITE_BIND", "127.0.0.1:8000")
workers = env_int("BATCHSITE_WEB_WORKERS", min(2 * _cpus() + 1, 8), minimum=1)
# Threads let a worker answer probes and quick reads while another thread streams a file.
worker_class = "gthread"
threads = env_int("BATCHSITE_WEB_THREADS", 2, minimum=1)
timeout = env_int("BATCHSITE_WEB_TIMEOUT", 120, minimum=1)
# On SIGTERM, requests in flight get this long to finish (systemd's TimeoutStopSec is longer).
graceful_timeout = 30
# Idle keep-alive connections from the proxy in front.
keepalive = 5
# gunicorn 25+ opens a control socket in $HOME; reload with SIGHUP (systemctl reload) instead.
control_socket_disable = True

logconfig_dict = gunicorn_logging_config(log_format=env_choice("BATCHSITE_LOG_FORMAT", LOG_FORMATS))
# Client address, request line, status, bytes, milliseconds, referrer, user agent, and the
# request id the app answered with (batchsite.requestid).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s" %({x-request-id}o)s'
