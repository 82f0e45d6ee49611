"""Configure batchsite from the environment.

Every setting a deployment changes comes from an environment variable (see the README's
configuration table); nothing here needs editing to run on SQLite or on PostgreSQL + Redis.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from batchsite.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_int_map,
    env_list,
    env_port_list,
    env_senders,
)
from batchsite.logging import LOG_FORMATS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG")

BATCHSITE_DATA_DIR = Path(os.environ.get("BATCHSITE_DATA_DIR", BASE_DIR / "var")).resolve()
BATCHSITE_DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """Return DJANGO_SECRET_KEY, else the key file in the data dir.

    DEBUG and local runs (`make run`) make that file when there is none, so every later
    `manage.py` command in the same checkout finds it; nothing else ever writes it.
    """
    key = os.environ.get("DJANGO_SECRET_KEY", "").strip()
    if key:
        return key
    path = BATCHSITE_DATA_DIR / "secret_key"
    if not path.exists():
        if not (DEBUG or env_bool("BATCHSITE_LOCAL_RUN")):
            raise ImproperlyConfigured(
                f"DJANGO_SECRET_KEY is not set and there is no key file {path}. "
                "Set DJANGO_SECRET_KEY to a long random string, or run `make run` once "
                "to make that file for this checkout."
            )
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"the key file {path} is empty; delete it or fill it.")
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

# --- HTTPS and browser security ---------------------------------------------------------------
# Whatever forces HTTPS is off unless the environment turns it on, so `make run` works over
# plain http; with DEBUG on nothing forces it. `manage.py check --deploy` is clean once
# BATCHSITE_HSTS_SECONDS, BATCHSITE_HSTS_INCLUDE_SUBDOMAINS, BATCHSITE_HSTS_PRELOAD,
# BATCHSITE_SECURE_COOKIES and BATCHSITE_SSL_REDIRECT are set.

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto and appends to X-Forwarded-For.
BATCHSITE_BEHIND_PROXY = env_bool("BATCHSITE_BEHIND_PROXY")
if BATCHSITE_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy on every response (django-csp): scripts and styles only from this
# site's own files, never inline or eval'd, so injected markup cannot run. The dashboard
# and the admin need nothing more. Two third-party pages style inline, which they alone may:
# the API docs (Swagger UI, batches/api/urls.py) and the browsable API (batches/api/csp.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
# Checks an operator accepts, e.g. security.W008 when the proxy itself redirects to HTTPS.
SILENCED_SYSTEM_CHECKS = env_list("BATCHSITE_SILENCED_CHECKS")
if not DEBUG:
    SECURE_HSTS_SECONDS = env_int("BATCHSITE_HSTS_SECONDS", 0)
    if SECURE_HSTS_SECONDS > 0:
        SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("BATCHSITE_HSTS_INCLUDE_SUBDOMAINS")
        SECURE_HSTS_PRELOAD = env_bool("BATCHSITE_HSTS_PRELOAD")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("BATCHSITE_SECURE_COOKIES")
    SECURE_SSL_REDIRECT = env_bool("BATCHSITE_SSL_REDIRECT")
    # Load balancers and probes call these over plain http from inside the network, by
    # address: a redirect would name the Host, which no ALLOWED_HOSTS lists (probes.py).
    SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz)/?$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "csp",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "jobs",
    "batches",
]

MIDDLEWARE = [
    # First, so every response (probes, redirects, errors) carries X-Request-ID and every
    # log line of the request its id.
    "batchsite.requestid.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "batches.api.csp.ContentSecurityPolicyMiddleware",
    # Probes by IP: before CommonMiddleware, which refuses a Host not in ALLOWED_HOSTS.
    "batchsite.probes.ProbeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "batchsite.urls"
WSGI_APPLICATION = "batchsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _databases() -> dict:
    """Build DATABASES from DATABASE_URL, tuning SQLite for several worker processes."""
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{BATCHSITE_DATA_DIR / 'batchsite.sqlite3'}"
    config = dj_database_url.parse(url, conn_max_age=0)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            # IMMEDIATE takes the write lock at BEGIN, so two workers never deadlock
            # upgrading read locks; WAL lets readers go on while one writes.
            "transaction_mode": "IMMEDIATE",
            "timeout": env_int("BATCHSITE_SQLITE_TIMEOUT", 30),
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
            ),
        }
    else:
        config["CONN_HEALTH_CHECKS"] = True
    return {"default": config}


DATABASES = _databases()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BATCHSITE_DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the app and project folders, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = BATCHSITE_DATA_DIR / "files"

# Every file batchsite keeps (file items, output files) goes through the "default" storage,
# named relative to it: the data dir's files/ folder, or an S3 bucket once one is named, so
# hosts need no shared disk. Names are the same in both, under an optional key prefix.
BATCHSITE_S3_BUCKET = os.environ.get("BATCHSITE_S3_BUCKET", "").strip()
if BATCHSITE_S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": BATCHSITE_S3_BUCKET,
            "endpoint_url": os.environ.get("BATCHSITE_S3_ENDPOINT_URL", "").strip() or None,
            "region_name": os.environ.get("BATCHSITE_S3_REGION", "").strip() or None,
            # Unset: boto3's own chain (AWS_* variables, instance or pod credentials).
            "access_key": os.environ.get("BATCHSITE_S3_ACCESS_KEY_ID", "").strip() or None,
            "secret_key": os.environ.get("BATCHSITE_S3_SECRET_ACCESS_KEY", "").strip() or None,
            "location": os.environ.get("BATCHSITE_S3_PREFIX", "").strip().strip("/"),
            # Names are random: no existence check before each write.
            "file_overwrite": True,
            # A file opened for reading spools to disk past this, never whole into memory.
            "max_memory_size": 8 * 1024 * 1024,
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
# With an S3 bucket: answer package downloads with a redirect to a presigned URL of the
# package, built once into the bucket, instead of streaming it through the web process.
BATCHSITE_PACKAGE_REDIRECT = env_bool("BATCHSITE_PACKAGE_REDIRECT")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

LOGIN_URL = "admin:login"

# `plain` text lines, or `json`: one JSON object per line with batch/item fields, for shippers.
BATCHSITE_LOG_FORMAT = env_choice("BATCHSITE_LOG_FORMAT", LOG_FORMATS)

# No log line shows an API key or a webhook secret (batchsite.logging.SecretsFilter).
LOGGING = logging_config(
    log_format=BATCHSITE_LOG_FORMAT,
    batches_level=os.environ.get("BATCHSITE_LOG_LEVEL", "INFO"),
    q_level=os.environ.get("BATCHSITE_Q_LOG_LEVEL", "WARNING"),
)

# `Authorization: Bearer <token>` reads /metrics; empty: only staff sessions may.
BATCHSITE_METRICS_TOKEN = os.environ.get("BATCHSITE_METRICS_TOKEN", "").strip()

# --- REST framework and its schema --------------------------------------------------------

# Requests each API key (else staff user, else client address) may make: "N/s", "N/min",
# "N/hour" or "N/day"; "0" or "" turns throttling off.
BATCHSITE_THROTTLE_RATE = os.environ.get("BATCHSITE_THROTTLE_RATE", "6000/min").strip()
_count, _, _period = BATCHSITE_THROTTLE_RATE.partition("/")
if BATCHSITE_THROTTLE_RATE not in ("", "0") and not (
    _count.isdigit()
    and int(_count) > 0
    and _period in ("s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day")
):
    raise ImproperlyConfigured(
        f"BATCHSITE_THROTTLE_RATE must be like 6000/min (or per s, hour, day), "
        f"or 0 to turn throttling off, not {BATCHSITE_THROTTLE_RATE!r}"
    )

# Bad API keys each client address may present per minute, on every interface; past it the
# address is answered 429 `throttled` (even with a valid key) until the minute ends. 0: off.
BATCHSITE_AUTH_FAILURES_PER_MINUTE = env_int("BATCHSITE_AUTH_FAILURES_PER_MINUTE", 20, minimum=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "batches.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["batches.api.permissions.IsAccountOrStaff"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "batches.api.renderers.StaffOnlyBrowsableNegotiation",
    "DEFAULT_PARSER_CLASSES": [
        "batches.api.parsers.DepthLimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "batches.api.schema.ProblemAutoSchema",
    "EXCEPTION_HANDLER": "batches.api.problems.problem_exception_handler",
    # The rate is BATCHSITE_THROTTLE_RATE, read on every request.
    "DEFAULT_THROTTLE_CLASSES": ["batches.api.throttling.ApiKeyRateThrottle"],
    # `?format=` names export formats (jsonl, csv), not renderers.
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "batchsite API",
    "DESCRIPTION": (
        "Create a batch, add items, commit it, and let workers process them. "
        "Errors are RFC 9457 problem documents with a machine-readable `code`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The native API's document; each compat dialect has its own (batches.compat.schema).
    "DEFAULT_GENERATOR_CLASS": "batches.api.schema.DocumentGenerator",
    "ENUM_NAME_OVERRIDES": {
        "BatchStatusEnum": "batches.models.Batch.Status",
        "ItemStatusEnum": "batches.models.Item.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "batches.api.schema.add_links",
    ],
}

# --- Workers (django-q2) ----------------------------------------------------------------------

BATCHSITE_BROKER_URL = os.environ.get("BATCHSITE_BROKER_URL", "").strip()
BATCHSITE_WORKERS = env_int("BATCHSITE_WORKERS", 2)
# A chunk task that runs longer than this is killed by its cluster; its lease then expires
# and the sweep hands the chunk to another worker.
BATCHSITE_TASK_TIMEOUT = env_int("BATCHSITE_TASK_TIMEOUT", 900)

Q_CLUSTER = {
    "name": os.environ.get("BATCHSITE_QUEUE_NAME", "batchsite"),
    "workers": BATCHSITE_WORKERS,
    "timeout": BATCHSITE_TASK_TIMEOUT,
    # django-q2 hands a task out again once `retry` seconds pass after a cluster took it,
    # so it must exceed the timeout plus the time a task may wait in a prefetch queue.
    "retry": BATCHSITE_TASK_TIMEOUT + 300,
    "queue_limit": max(2, BATCHSITE_WORKERS),
    # Its default 0 means "forever"; our own sweep counts attempts for killed workers.
    "max_attempts": 3,
    "ack_failures": True,
    # Results live in our tables; keep only failed django-q2 tasks for operators.
    "save_limit": -1,
    "catch_up": False,
    "poll": 0.1,
    "label": "Tasks",
}
if BATCHSITE_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
    Q_CLUSTER["redis"] = BATCHSITE_BROKER_URL
elif BATCHSITE_BROKER_URL in ("", "orm"):
    Q_CLUSTER["orm"] = "default"
else:
    raise ImproperlyConfigured(
        f"BATCHSITE_BROKER_URL must be empty (ORM broker) or a redis:// URL, "
        f"not {BATCHSITE_BROKER_URL!r}"
    )

# A cache every process shares: django-q2 keeps its cluster stats there (with the ORM
# broker), which the dashboard shows.
if Q_CLUSTER.get("redis"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": BATCHSITE_BROKER_URL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(BATCHSITE_DATA_DIR / "cache"),
        }
    }

# --- batchsite --------------------------------------------------------------------------------

# Extra job types, as dotted paths to JobType subclasses.
BATCHSITE_JOB_TYPES = env_list("BATCHSITE_JOB_TYPES")
BATCHSITE_DEFAULT_JOB_TYPE = os.environ.get("BATCHSITE_DEFAULT_JOB_TYPE", "echo")
BATCHSITE_MAX_ITEMS_PER_REQUEST = env_int("BATCHSITE_MAX_ITEMS_PER_REQUEST", 10_000)
BATCHSITE_MAX_ITEMS_PER_BATCH = env_int("BATCHSITE_MAX_ITEMS_PER_BATCH", 10_000_000)
BATCHSITE_MAX_PAYLOAD_BYTES = env_int("BATCHSITE_MAX_PAYLOAD_BYTES", 64 * 1024)
# JSON from a client (a body, a line of an upload, a JSON form field) nesting deeper than this
# is refused before it is parsed. Python's parser, and code that walks what it built, recurse
# once or more per level: the ceiling keeps them all well below Python's recursion limit.
BATCHSITE_JSON_MAX_DEPTH = env_int("BATCHSITE_JSON_MAX_DEPTH", 64, minimum=1, maximum=200)
# Seconds a worker may spend downloading a batch's source_url.
BATCHSITE_SOURCE_TIMEOUT = env_int("BATCHSITE_SOURCE_TIMEOUT", 60)
BATCHSITE_MAX_UPLOAD_BYTES = env_int("BATCHSITE_MAX_UPLOAD_BYTES", 2 * 1024**3)
BATCHSITE_ZIP_MAX_MEMBERS = env_int("BATCHSITE_ZIP_MAX_MEMBERS", 10_000)
BATCHSITE_ZIP_MAX_UNCOMPRESSED = env_int("BATCHSITE_ZIP_MAX_UNCOMPRESSED", 4 * 1024**3)
# Seconds a worker holds a chunk without renewing before another may take it over.
BATCHSITE_LEASE_SECONDS = env_int("BATCHSITE_LEASE_SECONDS", 60)
# The sweep hands a chunk to the broker again once it sat queued this long (seconds).
BATCHSITE_REQUEUE_AFTER = env_int("BATCHSITE_REQUEUE_AFTER", 120)
# After this many claims whose worker died, the items in flight fail with `worker_lost`.
BATCHSITE_CHUNK_MAX_ATTEMPTS = env_int("BATCHSITE_CHUNK_MAX_ATTEMPTS", 5)
# A batch left uncommitted this long (seconds) expires.
BATCHSITE_OPEN_BATCH_TTL = env_int("BATCHSITE_OPEN_BATCH_TTL", 7 * 24 * 3600)
# Ended batches are deleted after this many days, unless the batch sets retention_days.
BATCHSITE_RETENTION_DAYS = env_int("BATCHSITE_RETENTION_DAYS", 30)
# Minutes between sweeps (recovery of lost chunks, not_before, TTL, deadlines, retention).
BATCHSITE_SWEEP_MINUTES = env_int("BATCHSITE_SWEEP_MINUTES", 1)
# The item rate behind `throughput` and `estimated_completion` covers about this many seconds.
BATCHSITE_RATE_WINDOW_SECONDS = env_int("BATCHSITE_RATE_WINDOW_SECONDS", 60)
# The dashboard flags a running batch that made no progress for this many minutes.
BATCHSITE_STUCK_MINUTES = env_int("BATCHSITE_STUCK_MINUTES", 10)
# A worker writes its outcomes at least this often (seconds), so progress stays live.
BATCHSITE_SLICE_SECONDS = env_float("BATCHSITE_SLICE_SECONDS", 1.0)
BATCHSITE_OUTBOUND_ALLOWED_HOSTS = env_list("BATCHSITE_OUTBOUND_ALLOWED_HOSTS")
# Ports outbound requests may use (empty: any); a proxy for them (proxy variables from the
# environment are ignored: outbound traffic goes where these settings say).
BATCHSITE_OUTBOUND_ALLOWED_PORTS = env_port_list("BATCHSITE_OUTBOUND_ALLOWED_PORTS")
BATCHSITE_OUTBOUND_PROXY = os.environ.get("BATCHSITE_OUTBOUND_PROXY", "").strip()
if BATCHSITE_OUTBOUND_PROXY and not BATCHSITE_OUTBOUND_PROXY.startswith(("http://", "https://")):
    raise ImproperlyConfigured(
        f"BATCHSITE_OUTBOUND_PROXY must be an http:// or https:// URL, "
        f"not {BATCHSITE_OUTBOUND_PROXY!r}"
    )
# Webhooks: seconds per attempt; the first retry's delay (doubling, at most an hour); how
# long a delivery is retried; how long the previous secret still signs after a rotation;
# the fewest seconds between two batch.progress deliveries of a batch.
BATCHSITE_WEBHOOK_TIMEOUT = env_int("BATCHSITE_WEBHOOK_TIMEOUT", 10)
BATCHSITE_WEBHOOK_BACKOFF_SECONDS = env_int("BATCHSITE_WEBHOOK_BACKOFF_SECONDS", 30)
BATCHSITE_WEBHOOK_RETRY_SECONDS = env_int("BATCHSITE_WEBHOOK_RETRY_SECONDS", 24 * 3600)
BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS = env_int(
    "BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS", 24 * 3600
)
BATCHSITE_WEBHOOK_PROGRESS_SECONDS = env_int("BATCHSITE_WEBHOOK_PROGRESS_SECONDS", 30, minimum=1)
# http.request: response bytes kept in a result, and requests in flight per host and process.
BATCHSITE_HTTP_MAX_BODY_BYTES = env_int("BATCHSITE_HTTP_MAX_BODY_BYTES", 1024 * 1024)
BATCHSITE_HTTP_PER_HOST_CONCURRENCY = env_int("BATCHSITE_HTTP_PER_HOST_CONCURRENCY", 4)
# image.derive refuses images of more pixels than this (decompression bombs).
BATCHSITE_IMAGE_MAX_PIXELS = env_int("BATCHSITE_IMAGE_MAX_PIXELS", 50_000_000)
# document.sign's key and certificate (PEM); default: signing/ in the data dir, made by
# `manage.py createsigningkey`.
BATCHSITE_SIGNING_KEY = os.environ.get("BATCHSITE_SIGNING_KEY") or None
BATCHSITE_SIGNING_CERT = os.environ.get("BATCHSITE_SIGNING_CERT") or None
# document.verify: trust anchors (a PEM bundle of certificates); when set, a valid
# signature's chain is checked against them too and the result says which anchor it ends at.
BATCHSITE_SIGNING_TRUST = os.environ.get("BATCHSITE_SIGNING_TRUST") or None
# The signing dialect's processes: processId -> the job type its batches run.
BATCHSITE_SIGNING_PROCESSES = env_int_map(
    "BATCHSITE_SIGNING_PROCESSES", "1=document.sign,2=document.verify"
)

# Mail for email.send: Django's settings of these names, each set only when the
# environment sets it, so that email.send can tell a mail server someone named from
# Django's default (SMTP on localhost) and refuse its items up front when there is none.
for _name in (
    "EMAIL_BACKEND",
    "EMAIL_HOST",
    "EMAIL_HOST_USER",
    "EMAIL_HOST_PASSWORD",
    "EMAIL_FILE_PATH",
    "DEFAULT_FROM_EMAIL",
):
    if os.environ.get(_name):
        globals()[_name] = os.environ[_name]
# The senders an email.send item may name in `from`: addresses and @domains (every address
# of the domain). DEFAULT_FROM_EMAIL's address is always allowed; empty: only it.
BATCHSITE_EMAIL_ALLOWED_FROM = env_senders("BATCHSITE_EMAIL_ALLOWED_FROM")
if os.environ.get("EMAIL_PORT"):
    EMAIL_PORT = env_int("EMAIL_PORT", 25)
if os.environ.get("EMAIL_USE_TLS"):
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
if os.environ.get("EMAIL_USE_SSL"):
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
if env_bool("BATCHSITE_LOCAL_RUN") and not (
    os.environ.get("EMAIL_BACKEND") or os.environ.get("EMAIL_HOST")
):
    # `make run` prints mail on the worker's console, so email.send works on a fresh install.
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# A request body of 10,000 items is well over Django's 2.5 MB default.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("BATCHSITE_MAX_REQUEST_BYTES", 64 * 1024 * 1024)
