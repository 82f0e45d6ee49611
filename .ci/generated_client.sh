#!/usr/bin/env bash
# Smoke test of a client generated from the native OpenAPI document by openapi-python-client.
#
# Installs the generator from a pinned, hashed requirements file (.ci/requirements-openapi.txt,
# made from .ci/requirements-openapi.in with the pip-compile command at its top) into a
# throwaway venv; writes the schema with `manage.py spectacular`; generates the client with
# clients/openapi-python-client.yaml, failing if the generator warns about anything; installs
# the generated package into the same venv (its dependencies, httpx and attrs, are pinned
# there already); starts a live server (.ci/live_server.sh) that registers one more job type
# than the schema names; and runs .ci/generated_client_smoke.py, which imports the client
# and calls the server with it. Exits non-zero on any failure; always stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
WORK="$(mktemp -d "${TMPDIR:-/tmp}/batchsite-generated-client.XXXXXX")"
# shellcheck source=.ci/live_server.sh
. .ci/live_server.sh
trap live_server_stop EXIT

# A type that takes a file, registered on the server only: not in the schema, not in the client.
CUSTOM_TYPE_PATH=tests.jobtypes.Stamp
CUSTOM_TYPE=test.stamp

python_for_venv="$("$PY" -c 'import sys; print(sys._base_executable)')"
"$python_for_venv" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --require-hashes --only-binary :all: \
    -r .ci/requirements-openapi.txt

# The schema as the built-in types make it (no BATCHSITE_JOB_TYPES).
DJANGO_SECRET_KEY=schema-only-not-secret BATCHSITE_JOB_TYPES= "$PY" manage.py spectacular \
    --validate --fail-on-warn --format openapi-json --file "$WORK/schema.json"
if grep -q "$CUSTOM_TYPE" "$WORK/schema.json"; then
    echo "the schema names $CUSTOM_TYPE: the test would prove nothing" >&2
    exit 1
fi

# The generator reports what it could not turn into code as warnings and still exits 0;
# any such line fails this test. It formats its output with ruff when on PATH (it is, in
# its venv).
(
    cd "$WORK"
    PATH="$WORK/venv/bin:$PATH" openapi-python-client generate --path schema.json \
        --config "$OLDPWD/clients/openapi-python-client.yaml" --meta setup
) >"$WORK/generate.log" 2>&1 || { cat "$WORK/generate.log" >&2; exit 1; }
cat "$WORK/generate.log"
if grep -qiE "warning|error|unsupported|skipping" "$WORK/generate.log"; then
    echo "openapi-python-client warned about the schema (above)" >&2
    exit 1
fi
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation --no-index \
    "$WORK/batchsite-api-client"

export BATCHSITE_JOB_TYPES="$CUSTOM_TYPE_PATH"
live_server_start

rc=0
"$WORK/venv/bin/python" .ci/generated_client_smoke.py "$BASE" "$BATCHSITE_CONTRACT_KEY" \
    "$CUSTOM_TYPE" || rc=$?
if [ "$rc" -ne 0 ]; then
    live_server_log
fi
exit "$rc"
