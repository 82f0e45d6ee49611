# Sourced by the CI scripts that need a live server (schemathesis.sh, generated_client.sh).
#
# `live_server_start` makes a fresh data dir (and SQLite database, unless DATABASE_URL names
# one) under $WORK, migrates, creates an account and an API key (exported as
# BATCHSITE_CONTRACT_KEY), starts the server with production-like settings on a free
# loopback port (BASE is its URL) and waits for /healthz/. `live_server_stop` stops it and
# removes $WORK; the caller traps it on EXIT. The caller sets PY and WORK first.

SERVER_PID=""

live_server_stop() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}

live_server_start() {
    # Production-like: DEBUG off, a real secret key, one allowed host; nothing forces HTTPS,
    # since the server speaks plain http on loopback. Throttling (of requests, and of bad
    # keys per address: schemathesis may present broken credentials) is off so that a fast
    # run is never cut short by 429s (their problem document is checked by the unit tests).
    export BATCHSITE_DATA_DIR="$WORK/data"
    DJANGO_SECRET_KEY="ci-only-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    export DJANGO_SECRET_KEY
    export DJANGO_DEBUG=0
    export DJANGO_ALLOWED_HOSTS=127.0.0.1
    export BATCHSITE_SSL_REDIRECT=0 BATCHSITE_SECURE_COOKIES=0 BATCHSITE_HSTS_SECONDS=0
    export BATCHSITE_BEHIND_PROXY=0
    export BATCHSITE_THROTTLE_RATE=0 BATCHSITE_AUTH_FAILURES_PER_MINUTE=0
    # Generated source URLs, image origins and callbacks must never leave this machine.
    export BATCHSITE_OUTBOUND_ALLOWED_HOSTS=
    unset BATCHSITE_LOCAL_RUN

    "$PY" manage.py migrate --no-input -v 0
    "$PY" manage.py createaccount ci >/dev/null
    BATCHSITE_CONTRACT_KEY="$("$PY" manage.py createapikey ci 2>/dev/null | tail -n 1)"
    export BATCHSITE_CONTRACT_KEY

    local port
    port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    BASE="http://127.0.0.1:$port"
    # The server production runs (gunicorn), or Django's own where gunicorn is not installed.
    if [ -x .venv/bin/gunicorn ]; then
        .venv/bin/gunicorn batchsite.wsgi --bind "127.0.0.1:$port" --workers 2 \
            >"$WORK/server.log" 2>&1 &
    else
        "$PY" manage.py runserver --noreload "127.0.0.1:$port" >"$WORK/server.log" 2>&1 &
    fi
    SERVER_PID=$!

    local attempt
    for attempt in $(seq 1 60); do
        curl -fsS -o /dev/null "$BASE/healthz/" 2>/dev/null && return 0
        if [ "$attempt" -eq 60 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server did not answer /healthz/ within 30 s:" >&2
            cat "$WORK/server.log" >&2
            exit 1
        fi
        sleep 0.5
    done
}

live_server_log() {
    # The server's own messages (tracebacks above all), without its line per request.
    echo "--- server log, requests left out (last 200 lines)" >&2
    grep -v -E '^\[[0-9]{2}/[A-Z][a-z]{2}/|WARNING django\.request ' "$WORK/server.log" | tail -n 200 >&2
}
