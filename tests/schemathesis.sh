#!/usr/bin/env bash
# API fuzzing against the OpenAPI document: `panvault demo` on a free loopback port, then
# schemathesis over every operation of /v1/openapi.json with the demo's shop key (and, for the
# admin operations, with its admin key), checking that no answer is a 5xx (not_a_server_error),
# that every status code is documented for its operation (status_code_conformance), that answers
# match the documented schema (response_schema_conformance), that a method the document does not
# list for a path is 405 with `Allow` (unsupported_method), and that no test card number appears
# in any answer except a reveal's (tests/schemathesis_hooks.py). ST_CHECKS overrides the list.
# Bounded: ST_MAX_EXAMPLES per operation (default 25) and ST_MAX_TIME seconds in all (default
# 240). Printed digit runs of 12+ are masked.
#
# Usage: bash tests/schemathesis.sh [path/to/panvault]   (default: target/debug/panvault)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/panvault}
[ -x "$bin" ] || { echo "no panvault binary at $bin (cargo build first)" >&2; exit 1; }
# The module rather than the `schemathesis` script, which pip may put off the PATH.
st() { python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "schemathesis"; schemathesis()' "$@"; }
python3 -c 'import schemathesis' 2>/dev/null || {
    echo "schemathesis is not installed (python3 -m pip install schemathesis)" >&2
    exit 1
}

tmp=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

PANVAULT_LOG=warn NO_COLOR=1 "$bin" demo --data "$tmp/data" --listen 127.0.0.1:0 \
    >"$tmp/demo.out" 2>"$tmp/demo.err" </dev/null &
pid=$!
for _ in $(seq 1 100); do
    grep -q '^Ctrl-C' "$tmp/demo.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "panvault demo exited:" >&2; cat "$tmp/demo.err" >&2; exit 1; }
    sleep 0.2
done
grep -q '^Ctrl-C' "$tmp/demo.out" || { echo "panvault demo did not start" >&2; exit 1; }
shop_key=$(sed -n 's/^shop key: *\([^ ]*\).*/\1/p' "$tmp/demo.out")
admin_key=$(sed -n 's/^admin key: *\([^ ]*\).*/\1/p' "$tmp/demo.out")
base=$(grep -o 'https://127\.0\.0\.1:[0-9]*' "$tmp/demo.out" | head -1)
[ -n "$shop_key" ] && [ -n "$admin_key" ] && [ -n "$base" ] || { echo "no shop key or address in the demo's output" >&2; exit 1; }
echo "panvault demo at $base"

mask_digits() { sed -E 's/[0-9]{12,}/<digits>/g'; }

# run_pass NAME KEY SECONDS [schemathesis args...]
run_pass() {
    local name=$1 key=$2 secs=$3
    shift 3
    echo "== schemathesis, $name (${secs}s at most)"
    set +e
    PYTHONPATH="$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
        st run "$base/v1/openapi.json" \
        --url "$base" \
        --header "Authorization: Bearer $key" \
        --tls-verify "$tmp/data/tls/ca.pem" \
        --checks "${ST_CHECKS:-not_a_server_error,status_code_conformance,response_schema_conformance,unsupported_method,no_card_number_in_answer}" \
        --max-examples "${ST_MAX_EXAMPLES:-25}" \
        --max-time "$secs" \
        --seed "${ST_SEED:-1}" \
        --workers 1 \
        --request-timeout 10 \
        --generation-database none \
        --no-color \
        --output-truncate true \
        "$@" 2>&1 | mask_digits
    local status=${PIPESTATUS[0]}
    set -e
    return "$status"
}

status=0
# The merchant's view: tokens, reveal, proxy, seal status, unseal.
run_pass "shop key" "$shop_key" "${ST_MAX_TIME:-240}" || status=1
# The admin's operations (merchants, shops, API keys, key status and rotation, the audit trail,
# the evidence report, the metrics); sealing is left out, as every later answer would then be
# 503 by design.
run_pass "admin key" "$admin_key" "${ST_ADMIN_MAX_TIME:-60}" \
    --include-path-regex '^/(metrics$|v1/(merchants|api-keys|sys/keys|sys/evidence|audit))' || status=1
if ! kill -0 "$pid" 2>/dev/null; then
    echo "panvault demo died during the run:" >&2
    mask_digits <"$tmp/demo.err" >&2
    exit 1
fi
exit "$status"
