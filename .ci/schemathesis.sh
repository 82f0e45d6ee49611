#!/usr/bin/env bash
# Contract test: run schemathesis against a live server, built from the OpenAPI documents it
# serves: the native API's (/api/v1/schema/) and each compat dialect's (/compat/NAME/schema/).
#
# Starts the server as .ci/live_server.sh says (fresh SQLite database, production-like
# settings, an account and an API key) and runs schemathesis on each document with a fixed
# seed and a bounded number of examples. Exits non-zero on any failure; always stops the
# server.
#
# How many cases it generates is set in .ci/schemathesis.toml; SCHEMATHESIS_SEED (default
# 20240611) picks another reproducible run; extra arguments go to every `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
WORK="$(mktemp -d "${TMPDIR:-/tmp}/batchsite-schemathesis.XXXXXX")"
# shellcheck source=.ci/live_server.sh
. .ci/live_server.sh
trap live_server_stop EXIT

live_server_start

DOCUMENTS=(api/v1 compat/brightlocal compat/centrapay compat/signing compat/dlcs)
rc=0
for document in "${DOCUMENTS[@]}"; do
    printf '\n--- schemathesis: /%s/schema/\n' "$document"
    .venv/bin/schemathesis --config-file .ci/schemathesis.toml run \
        "$BASE/$document/schema/?format=json" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --seed "${SCHEMATHESIS_SEED:-20240611}" \
        --no-color \
        "$@" || rc=$?
done

if [ "$rc" -ne 0 ]; then
    live_server_log
fi
exit "$rc"
