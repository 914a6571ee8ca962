#!/usr/bin/env bash
# The operations drill: deploy/OPERATIONS.md followed end to end on this machine.
#
#   init (file keys, passphrase file) -> serve sealed -> a wrong passphrase is refused (400,
#   still sealed) -> unseal (POST /v1/sys/unseal) ->
#   merchant, shop, shop key -> tokenize a test card -> reveal -> stop ->
#   back up the data dir (tar, keys/ left out) and the keys (a second tar, kept apart) ->
#   the data backup alone opens nothing (keys status and serve fail) ->
#   restore both into a NEW data dir -> serve it sealed -> unseal -> reveal and compare ->
#   tokenize again (same token) -> stop -> `audit verify` on both data dirs.
#
# Usage: PANVAULT_BIN=target/release/panvault bash deploy/drill.sh
#   PANVAULT_BIN   the binary (default: target/release/panvault, then target/debug/panvault,
#                  then `panvault` on PATH)
#   DRILL_DIR      where to work (default: a new temporary directory, removed at the end unless
#                  DRILL_KEEP=1)
# Needs bash, curl, jq, tar. Exits non-zero at the first mismatch, naming the step. Never prints
# the card number: it only goes to the vault through a pipe and is compared inside jq.
set -euo pipefail
umask 077

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${PANVAULT_BIN:-}"
if [ -z "$BIN" ]; then
    for b in "$here/target/release/panvault" "$here/target/debug/panvault"; do
        if [ -x "$b" ]; then BIN=$b; break; fi
    done
    BIN="${BIN:-panvault}"
fi
command -v "$BIN" >/dev/null 2>&1 || { echo "drill: no panvault binary at '$BIN' (set PANVAULT_BIN)" >&2; exit 2; }
for tool in curl jq tar; do
    command -v "$tool" >/dev/null 2>&1 || { echo "drill: $tool is needed" >&2; exit 2; }
done

# A published test card (Visa), never a real one.
DRILL_PAN=4111111111111111
export DRILL_PAN

if [ -n "${DRILL_DIR:-}" ]; then
    WORK=$DRILL_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/panvault-drill.XXXXXX")
fi
chmod 0700 "$WORK"

STEP=setup
SERVER_PID=""
cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ]; then
        echo "drill: FAILED in step \"$STEP\" (exit $status); work dir kept: $WORK" >&2
        if [ -f "$WORK/server.log" ]; then
            echo "drill: last server log lines:" >&2
            tail -n 20 "$WORK/server.log" | grep -vF "$DRILL_PAN" >&2 || true
        fi
    elif [ "${DRILL_KEEP:-0}" != 1 ] && [ -z "${DRILL_DIR:-}" ]; then
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

step() {
    STEP=$1
    echo "drill: [$STEP]"
}
fail() {
    echo "drill: $*" >&2
    exit 1
}

DATA="$WORK/data"
RESTORED="$WORK/restored"
PASS="$WORK/passphrase" # stands for /run/panvault/passphrase (tmpfs) in OPERATIONS.md
BACKUP="$WORK/backup"   # the data backup (goes to the backup system)
KEYSAFE="$WORK/keysafe" # the key backup (goes elsewhere: another medium, another custodian)

# serve DIR: starts `panvault serve` sealed on a free loopback port; sets SERVER_PID, BASE, CA.
serve() {
    local dir=$1 addr="" i
    : >"$WORK/server.log"
    PANVAULT_LOG=info NO_COLOR=1 "$BIN" serve --data "$dir" --listen 127.0.0.1:0 \
        </dev/null >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 300); do
        addr=$(sed -n 's/.*listening on https:\/\/\([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n 1)
        [ -n "$addr" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || fail "serve exited before listening"
        sleep 0.1
    done
    [ -n "$addr" ] || fail "serve did not listen within 30 s"
    BASE="https://$addr"
    CA="$dir/tls/ca.pem"
}

stop() {
    kill -TERM "$SERVER_PID"
    local status=0
    wait "$SERVER_PID" || status=$?
    SERVER_PID=""
    [ "$status" -eq 0 ] || fail "serve exited with status $status on SIGTERM"
}

# api METHOD PATH [KEY] [BODY-FROM-STDIN]: prints the body, then the status on the last line.
api() {
    local method=$1 path=$2 key=${3:-}
    local args=(-sS --cacert "$CA" -X "$method" -o "$WORK/answer.json" -w '%{http_code}')
    [ -n "$key" ] && args+=(-H "Authorization: Bearer $key")
    if [ "${4:-}" = body ]; then
        args+=(-H 'Content-Type: application/json' --data-binary @-)
    fi
    curl "${args[@]}" "$BASE$path"
}

expect() {
    local want=$1 got=$2 what=$3
    [ "$got" = "$want" ] || fail "$what: HTTP $got, expected $want: $(jq -c 'del(.pan)' "$WORK/answer.json" 2>/dev/null || true)"
}

# The unseal body is built from the passphrase file inside jq and piped to curl: the passphrase
# is on no command line.
unseal() {
    local code
    code=$(api GET /v1/sys/seal-status)
    expect 200 "$code" "seal-status"
    jq -e '.sealed == true' "$WORK/answer.json" >/dev/null || fail "the vault did not start sealed"
    code=$(api GET /readyz)
    expect 503 "$code" "readyz while sealed"
    code=$(echo '{"passphrase":"not the passphrase at all"}' | api POST /v1/sys/unseal "" body)
    expect 400 "$code" "unseal with a wrong passphrase"
    code=$(api GET /readyz)
    expect 503 "$code" "readyz after a wrong passphrase"
    code=$(jq -n --rawfile p "$PASS" '{passphrase: $p}' | api POST /v1/sys/unseal "" body)
    expect 200 "$code" "unseal"
    code=$(api GET /v1/sys/seal-status)
    jq -e '.sealed == false' "$WORK/answer.json" >/dev/null || fail "still sealed after unseal"
    code=$(api GET /readyz)
    expect 200 "$code" "readyz after unseal"
}

echo "drill: binary $BIN ($("$BIN" --version 2>/dev/null || echo 'version unknown'))"
echo "drill: work dir $WORK"

step "passphrase"
# At least 12 characters; random, written once, never echoed. In production it lives on tmpfs
# (/run/panvault) or arrives through /dev/fd/N.
head -c 24 /dev/urandom | base64 | tr -d '\n=+/' >"$PASS"
chmod 0600 "$PASS"

step "init"
"$BIN" init --data "$DATA" --keys file --passphrase-file "$PASS" --json >"$WORK/init.json"
ADMIN=$(jq -er '.admin_api_key' "$WORK/init.json")
[ -f "$DATA/keys/keyring.json" ] || fail "init wrote no keys/keyring.json"
mode=$(stat -c '%a' "$DATA")
[ "$mode" = 700 ] || fail "data dir mode $mode, expected 700"
mode=$(stat -c '%a' "$DATA/keys/keyring.json")
[ "$mode" = 600 ] || fail "keyring.json mode $mode, expected 600"

step "serve sealed and unseal"
serve "$DATA"
unseal

step "merchant, shop, shop key"
code=$(echo '{"name":"Drill merchant","prefix":"DRLL"}' | api POST /v1/merchants "$ADMIN" body)
expect 201 "$code" "create merchant"
MERCHANT=$(jq -er '.merchant_id' "$WORK/answer.json")
code=$(echo '{"shop_login":"9000001"}' | api POST "/v1/merchants/$MERCHANT/shops" "$ADMIN" body)
case "$code" in 200 | 201 | 204) ;; *) expect 201 "$code" "add shop" ;; esac
code=$(echo '{"shop_login":"9000001","scopes":["tokenize","read","reveal"],"label":"drill"}' |
    api POST /v1/api-keys "$ADMIN" body)
expect 201 "$code" "create shop key"
KEY=$(jq -er '.api_key' "$WORK/answer.json")

step "tokenize"
code=$(jq -n '{pan: env.DRILL_PAN, expiry_month: 12, expiry_year: 2030}' | api POST /v1/tokens "$KEY" body)
expect 201 "$code" "tokenize"
TOKEN=$(jq -er '.token' "$WORK/answer.json")
jq -e '.masked_pan == "411111******1111"' "$WORK/answer.json" >/dev/null || fail "unexpected masked_pan"
echo "drill: token $TOKEN"

step "reveal before backup"
code=$(api POST "/v1/tokens/$TOKEN/reveal" "$KEY")
expect 200 "$code" "reveal"
jq -e '.pan == env.DRILL_PAN' "$WORK/answer.json" >/dev/null || fail "reveal gave another card"
rm -f "$WORK/answer.json"

step "stop"
stop

step "backup"
# The data backup leaves keys/ out; the keys go to a separate archive kept apart. A copy of the
# data backup alone cannot be decrypted.
mkdir -p "$BACKUP" "$KEYSAFE"
tar -C "$DATA" --exclude=./keys -cf "$BACKUP/panvault-data.tar" .
tar -C "$DATA" -cf "$KEYSAFE/panvault-keys.tar" ./keys
if tar -tf "$BACKUP/panvault-data.tar" | grep -q '^\./keys'; then
    fail "the data backup holds keys/"
fi
if grep -qaF "$DRILL_PAN" "$BACKUP/panvault-data.tar" "$KEYSAFE/panvault-keys.tar"; then
    fail "a backup holds the card number in clear"
fi
(cd "$BACKUP" && sha256sum panvault-data.tar >panvault-data.tar.sha256)
(cd "$KEYSAFE" && sha256sum panvault-keys.tar >panvault-keys.tar.sha256)
echo "drill: data backup $(stat -c %s "$BACKUP/panvault-data.tar") bytes, key backup $(stat -c %s "$KEYSAFE/panvault-keys.tar") bytes"

step "the data backup alone opens nothing"
mkdir -m 0700 "$WORK/data-only"
tar -C "$WORK/data-only" -xpf "$BACKUP/panvault-data.tar"
if "$BIN" keys status --data "$WORK/data-only" --passphrase-file "$PASS" >"$WORK/data-only.out" 2>&1; then
    fail "keys status opened a data backup that has no keys/"
fi
if PANVAULT_LOG=error timeout 20 "$BIN" serve --data "$WORK/data-only" --listen 127.0.0.1:0 \
    --passphrase-file "$PASS" </dev/null >>"$WORK/data-only.out" 2>&1; then
    fail "serve started on a data backup that has no keys/"
fi
rm -rf "$WORK/data-only"

step "restore into a new data dir"
(cd "$BACKUP" && sha256sum -c --quiet panvault-data.tar.sha256)
(cd "$KEYSAFE" && sha256sum -c --quiet panvault-keys.tar.sha256)
mkdir -m 0700 "$RESTORED"
tar -C "$RESTORED" -xpf "$BACKUP/panvault-data.tar"
tar -C "$RESTORED" -xpf "$KEYSAFE/panvault-keys.tar"
chmod 0700 "$RESTORED"
mode=$(stat -c '%a' "$RESTORED/keys/keyring.json")
[ "$mode" = 600 ] || fail "restored keyring.json mode $mode, expected 600"

step "serve the restored dir sealed and unseal"
serve "$RESTORED"
unseal

step "reveal after restore"
code=$(api POST "/v1/tokens/$TOKEN/reveal" "$KEY")
expect 200 "$code" "reveal after restore"
jq -e '.pan == env.DRILL_PAN' "$WORK/answer.json" >/dev/null || fail "reveal after restore gave another card"
rm -f "$WORK/answer.json"

step "tokenize again after restore (same token)"
code=$(jq -n '{pan: env.DRILL_PAN, expiry_month: 12, expiry_year: 2030}' | api POST /v1/tokens "$KEY" body)
expect 200 "$code" "re-tokenize after restore"
jq -e --arg t "$TOKEN" '.token == $t' "$WORK/answer.json" >/dev/null || fail "a new token after restore"

step "stop the restored vault"
stop

step "audit verify (with the passphrase: the signed head's MAC and every checkpoint's too)"
for dir in "$DATA" "$RESTORED"; do
    "$BIN" audit verify --data "$dir" --passphrase-file "$PASS" | tee "$WORK/verify.out"
    grep -q '^signed: MACs verified through entry [0-9]* (.*signed head)$' "$WORK/verify.out" ||
        fail "audit verify of $dir did not verify the signed head"
done

step "no card number in clear"
for dir in "$DATA" "$RESTORED"; do
    if grep -rqaF "$DRILL_PAN" "$dir"; then fail "$dir holds the card number in clear"; fi
done
if grep -qF "$DRILL_PAN" "$WORK/server.log"; then fail "the server log holds the card number"; fi

STEP=done
echo "drill: OK (init, sealed start, unseal, tokenize, backup with keys apart, restore into a new data dir, unseal, reveal matches, audit verify on both)"
