#!/usr/bin/env bash
# HTTPS load benchmark of a release vault against the machine's own ceiling (issue 3, item 8).
#
#   bash benches/http_load.sh            # from the repo root; prints a markdown table on stdout
#
# What it does: builds `panvault` and `examples/echo.rs` in release, starts `panvault demo` (a
# dev vault, redb, durable group commit) and the echo server (bare actix-web + rustls with the
# vault's own TLS config and certificate, `POST /echo` parses the JSON body and returns it) on
# free loopback ports in a temp dir, creates keys and seed cards, then drives each phase with
# wrk over HTTPS keep-alive (TLS 1.3; wrk does not verify the certificate):
#
#   echo        POST /echo, the same tokenize JSON body (fresh card number each request)
#   tokenize    POST /v1/tokens, a new card each request (201, durable before the answer)
#   retokenize  POST /v1/tokens, one of SEED_CARDS already-tokenized cards (200)
#   read        GET  /v1/tokens/{token}, one of the seed tokens
#   reveal      POST /v1/tokens/{token}/reveal, one of the seed tokens
#   proxy       a Nexi MOTO charge straight to the demo's gateway sandbox, then through the
#               vault's proxy with a token (issue 5): the added latency, at 1 and 64 connections
#   reenc       restarts the vault (a new DEK: every token so far is under an old one), then
#               tokenize without and with the re-encryption job running (issue 4): live
#               throughput as a fraction, and the job's records/s
#
# Reveal is rate-limited per API key (10/s, burst 20), and so are proxied charges (50/s, burst
# 100). To measure server throughput rather than the limiters, the reveal and proxy phases
# round-robin their requests over REVEAL_KEYS keys of the demo shop holding reveal and charge
# (per-key rate = total / REVEAL_KEYS); any 429 still fails the run.
#
# Every request to the vault carries a synthetic, Luhn-valid card number or token generated
# here (never a real card); none is printed or logged. Each phase: WARMUP of load first (not
# counted), then DURATION measured; wrk -t THREADS -c CONNECTIONS. Each vault phase is paired
# with an echo run (warmup and measured) right before it, and its ratio is req/s over that
# echo's req/s: on this shared VM the ceiling drifts by 20-30% within minutes. The script exits non-zero if any phase saw a non-2xx
# answer or a socket error/timeout, or if a server failed.
#
# Tunables (environment): THREADS=2 CONNECTIONS=64 DURATION=10s WARMUP=3s SEED_CARDS=2000
# REVEAL_KEYS=10000 KEEP_LOGS=DIR (copy wrk and server logs there) PHASES="new retok read reveal
# proxy reenc" (a subset, e.g. for profiling one phase) REENC_MIN_TOKENS=300000 (reenc first tokenizes
# for REENC_FILL=20s if fewer tokens exist).
set -euo pipefail

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
SEED_CARDS=${SEED_CARDS:-2000}
REVEAL_KEYS=${REVEAL_KEYS:-10000}
PHASES=${PHASES:-new retok read reveal proxy reenc}
REENC_MIN_TOKENS=${REENC_MIN_TOKENS:-300000}
REENC_FILL=${REENC_FILL:-20s}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '%s\n' "$*" >&2; }
die() { log "http_load: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (apt-get)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >&2
fi
command -v curl >/dev/null 2>&1 || die "curl is required"

log "building release (panvault, examples/echo)"
cargo build --release --quiet --bin panvault --example echo >&2
TARGET=${CARGO_TARGET_DIR:-target}
PANVAULT=$TARGET/release/panvault
ECHO=$TARGET/release/examples/echo

# --- servers -----------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/panvault-http-load.XXXXXX")
VAULT_PID=""
ECHO_PID=""
cleanup() {
    local rc=$?
    for pid in $ECHO_PID $VAULT_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $ECHO_PID $VAULT_PID; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp "$TMP"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN PID: until FILE has a line matching PATTERN (30 s, or the process died).
wait_for() {
    local i
    for i in $(seq 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || die "server exited early; see $1 and its .err"
        sleep 0.1
    done
    die "timed out waiting for '$2' in $1"
}

# start_vault: `panvault demo` on the data dir (made on the first call); sets VAULT_PID and
# VAULT_URL, and on the first call ADMIN_KEY and SHOP_KEY (they stay valid across restarts).
start_vault() {
    PANVAULT_LOG=warn "$PANVAULT" demo --data "$TMP/vault" --listen 127.0.0.1:0 \
        >"$TMP/vault.out" 2>>"$TMP/vault.log" &
    VAULT_PID=$!
    wait_for "$TMP/vault.out" 'Ctrl-C stops' "$VAULT_PID"
    ADMIN_KEY=${ADMIN_KEY:-$(sed -n 's/^admin key: *\(pvk_[^ ]*\).*/\1/p' "$TMP/vault.out")}
    SHOP_KEY=${SHOP_KEY:-$(sed -n 's/^shop key: *\(pvk_[^ ]*\).*/\1/p' "$TMP/vault.out")}
    VAULT_URL=$(grep -o 'https://127\.0\.0\.1:[0-9]*' "$TMP/vault.out" | head -1)
    [ -n "$ADMIN_KEY" ] && [ -n "$SHOP_KEY" ] && [ -n "$VAULT_URL" ] || die "could not parse demo output"
}
stop_vault() {
    kill -TERM "$VAULT_PID" 2>/dev/null || true
    wait "$VAULT_PID" 2>/dev/null || { FAILED=1; log "the vault did not exit cleanly"; }
    VAULT_PID=""
}

log "starting the vault (demo) and the echo server"
ADMIN_KEY=""
SHOP_KEY=""
start_vault
CA=$TMP/vault/tls/ca.pem

"$ECHO" "$TMP/vault" 127.0.0.1:0 >"$TMP/echo.out" 2>"$TMP/echo.log" &
ECHO_PID=$!
wait_for "$TMP/echo.out" '^listening on https://' "$ECHO_PID"
ECHO_URL=$(sed -n 's#^listening on \(https://[^ ]*\)$#\1#p' "$TMP/echo.out" | head -1)

# --- keys and seed cards -----------------------------------------------------------------------
# pan SPACE THREAD INDEX: "4" SPACE THREAD(2) INDEX(11) + Luhn check digit; wrk's Lua below
# computes exactly the same numbers (space 0 = seed cards, 1 = warmup, 2 = measured runs).
pan() {
    local body d sum=0 i n
    body=$(printf '4%d%02d%011d' "$1" "$2" "$3")
    n=${#body}
    for ((i = n - 1; i >= 0; i--)); do
        d=${body:i:1}
        if (((n - 1 - i) % 2 == 0)); then
            d=$((d * 2))
            ((d > 9)) && d=$((d - 9))
        fi
        sum=$((sum + d))
    done
    printf '%s%d' "$body" $(((10 - sum % 10) % 10))
}

# curl_batch CONFIG: runs a curl config of many transfers (blocks separated by `next`, each with
# its own options), 32 in parallel over keep-alive connections.
curl_batch() {
    curl -sS --no-progress-meter --parallel --parallel-max 32 --config "$1" >&2 || die "curl batch $1 failed"
}

log "creating $REVEAL_KEYS reveal keys and $SEED_CARDS seed cards"
mkdir -p "$TMP/k" "$TMP/t"
{
    for ((i = 0; i < REVEAL_KEYS; i++)); do
        printf 'url = "%s/v1/api-keys"\nheader = "Authorization: Bearer %s"\n' "$VAULT_URL" "$ADMIN_KEY"
        printf 'header = "Content-Type: application/json"\n'
        printf 'data = "{\\"shop_login\\":\\"9000001\\",\\"scopes\\":[\\"reveal\\",\\"charge\\"]}"\n'
        printf 'output = "%s/k/%d"\ncacert = "%s"\nfail\n' "$TMP" "$i" "$CA"
        if ((i + 1 < REVEAL_KEYS)); then printf 'next\n'; fi
    done
} >"$TMP/keys.curl"
{
    for ((i = 0; i < SEED_CARDS; i++)); do
        printf 'url = "%s/v1/tokens"\nheader = "Authorization: Bearer %s"\n' "$VAULT_URL" "$SHOP_KEY"
        printf 'header = "Content-Type: application/json"\n'
        printf 'data = "{\\"pan\\":\\"%s\\",\\"expiry_month\\":12,\\"expiry_year\\":2030}"\n' "$(pan 0 0 "$i")"
        printf 'output = "%s/t/%d"\ncacert = "%s"\nfail\n' "$TMP" "$i" "$CA"
        if ((i + 1 < SEED_CARDS)); then printf 'next\n'; fi
    done
} >"$TMP/seed.curl"
curl_batch "$TMP/keys.curl"
curl_batch "$TMP/seed.curl"
rm -f "$TMP/seed.curl"
cat "$TMP"/k/* | grep -o '"api_key":"pvk_[^"]*"' | cut -d'"' -f4 >"$TMP/keys.txt"
cat "$TMP"/t/* | grep -o '"token":"[^"]*"' | cut -d'"' -f4 >"$TMP/tokens.txt"
[ "$(wc -l <"$TMP/keys.txt")" -eq "$REVEAL_KEYS" ] || die "created $(wc -l <"$TMP/keys.txt") of $REVEAL_KEYS keys"
[ "$(wc -l <"$TMP/tokens.txt")" -eq "$SEED_CARDS" ] || die "seeded $(wc -l <"$TMP/tokens.txt") of $SEED_CARDS cards"

# --- the wrk script ----------------------------------------------------------------------------
cat >"$TMP/load.lua" <<'LUA'
-- PV_MODE: echo | new | retok | read | reveal. Thread t (1..PV_THREADS) sends request numbers
-- t-1, t-1+PV_THREADS, ... so threads never repeat a card and round-robin keys/tokens together.
local mode = os.getenv("PV_MODE")
local space = tonumber(os.getenv("PV_SPACE") or "1")
local nthreads = tonumber(os.getenv("PV_THREADS") or "1")
local nseed = tonumber(os.getenv("PV_SEED") or "1")
local shop_auth = "Bearer " .. (os.getenv("PV_KEY") or "")

local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local function lines(path)
  local t = {}
  if path then for l in io.lines(path) do t[#t + 1] = l end end
  return t
end

local function pan(sp, th, i)
  local body = string.format("4%d%02d%011d", sp, th, i)
  local sum, n = 0, #body
  for k = n, 1, -1 do
    local d = body:byte(k) - 48
    if (n - k) % 2 == 0 then d = d * 2; if d > 9 then d = d - 9 end end
    sum = sum + d
  end
  return body .. tostring((10 - sum % 10) % 10)
end

local tokens, keys, seq
function init(args)
  tokens = lines(os.getenv("PV_TOKENS"))
  keys = lines(os.getenv("PV_KEYS"))
  seq = (tid or 1) - 1
end

local function card(p)
  return '{"pan":"' .. p .. '","expiry_month":12,"expiry_year":2030}'
end

function request()
  local n = seq
  seq = seq + nthreads
  if mode == "echo" or mode == "new" then
    local path = mode == "echo" and "/echo" or "/v1/tokens"
    return wrk.format("POST", path,
      { ["Authorization"] = shop_auth, ["Content-Type"] = "application/json" },
      card(pan(space, tid or 1, n)))
  elseif mode == "retok" then
    return wrk.format("POST", "/v1/tokens",
      { ["Authorization"] = shop_auth, ["Content-Type"] = "application/json" },
      card(pan(0, 0, n % nseed)))
  elseif mode == "read" then
    return wrk.format("GET", "/v1/tokens/" .. tokens[n % #tokens + 1],
      { ["Authorization"] = shop_auth })
  elseif mode == "proxy" or mode == "direct" then
    -- A Nexi MOTO charge: through the vault with a seed token, or straight to the sandbox
    -- with the same seed card (what the vault forwards after the swap).
    local i = n % #tokens
    local card, path, h
    if mode == "proxy" then
      -- keys round-robin as in reveal: proxied charges are limited per key (50/s)
      card, path = tokens[i + 1], "/v1/proxy/nexi/orders/moto"
      h = { ["Authorization"] = "Bearer " .. keys[n % #keys + 1] }
    else
      card, path = pan(0, 0, i), "/nexi/orders/moto"
      h = { ["X-Api-Key"] = "sandbox-terminal-key" }
    end
    h["Content-Type"] = "application/json"
    h["Correlation-Id"] = "3f6c1a52-9d1e-4c1b-8a57-2f0e5b8f9c11"
    return wrk.format("POST", path, h,
      '{"order":{"orderId":"b' .. (tid or 1) .. '-' .. n .. '","amount":"1000","currency":"EUR",' ..
      '"customerInfo":{"cardHolderName":"Bench"}},' ..
      '"card":{"pan":"' .. card .. '","expiryDate":"1230"},"captureType":"EXPLICIT"}')
  else -- reveal: key and token both round-robin
    return wrk.format("POST", "/v1/tokens/" .. tokens[n % #tokens + 1] .. "/reveal",
      { ["Authorization"] = "Bearer " .. keys[n % #keys + 1] })
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d sockerr=%d timeouts=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write, e.timeout))
end
LUA

# run_wrk MODE URL SPACE DURATION LOGNAME
run_wrk() {
    PV_MODE=$1 PV_SPACE=$3 PV_THREADS=$THREADS PV_SEED=$SEED_CARDS PV_KEY=$SHOP_KEY \
        PV_TOKENS=$TMP/tokens.txt PV_KEYS=$TMP/keys.txt \
        wrk -t "$THREADS" -c "$CONNECTIONS" -d "$4" --latency -s "$TMP/load.lua" "$2" \
        >"$TMP/$5.log" 2>&1 || die "wrk failed in $5; see log"
}

metric() { # metric NAME-AND-LABELS: a value from the vault's /metrics, 0 if absent
    curl -sS --cacert "$CA" -H "Authorization: Bearer $ADMIN_KEY" "$VAULT_URL/metrics" | awk -v k="$1" '$1 == k { print $2 }' | tail -1 | grep . || echo 0
}

FAILED=0
declare -A RPS P50 P99 BAD
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
declare -A CPU
# measure NAME MODE URL [WARM_SPACE RUN_SPACE]: warmup, then the measured run; sets
# RPS/P50/P99/BAD[NAME] and $line/$warm. The card-number spaces (default 1 and 2) keep new cards new.
measure() {
    log "phase $1: warmup $WARMUP, then $DURATION (-t$THREADS -c$CONNECTIONS)"
    run_wrk "$2" "$3" "${4:-1}" "$WARMUP" "$1-warmup"
    local pid=$VAULT_PID
    [ "$2" = echo ] && pid=$ECHO_PID
    local t0
    t0=$(cpu_ticks "$pid")
    run_wrk "$2" "$3" "${5:-2}" "$DURATION" "$1"
    CPU[$1]=$(($(cpu_ticks "$pid") - t0))
    line=$(grep '^RESULT ' "$TMP/$1.log") || die "no result in $1"
    warm=$(grep '^RESULT ' "$TMP/$1-warmup.log") || die "no result in $1 warmup"
    RPS[$1]=$(get rps "$line")
    P50[$1]=$(get p50_ms "$line")
    P99[$1]=$(get p99_ms "$line")
    # Server CPU per request (µs): less sensitive than req/s to what else the machine runs.
    CPU[$1]=$(awk -v t="${CPU[$1]}" -v hz="$TICK" -v n="$(get requests "$line")" 'BEGIN { printf "%.0f", n ? t / hz * 1e6 / n : 0 }')
    local bad=0 l
    for l in "$line" "$warm"; do
        bad=$((bad + $(get non2xx "$l") + $(get sockerr "$l") + $(get timeouts "$l")))
    done
    BAD[$1]=$bad
    if [ "$bad" -ne 0 ]; then
        FAILED=1
        log "phase $1: $bad non-2xx answers or socket errors:"
        grep -E 'Non-2xx|Socket errors' "$TMP/$1-warmup.log" "$TMP/$1.log" >&2 || true
    fi
}
# job_field FIELD: a number from the job's progress in the saved GET /v1/sys/keys answer.
job_field() { grep -o "\"$1\":[a-z0-9]*" "$TMP/reenc-end.json" | tail -1 | cut -d: -f2; }
# The reenc phase (issue 4): every vault start begins a new DEK, so after a restart every token
# made so far is under an old one. Tokenize is measured once without the job ("reenc-base") and
# once while it runs ("reenc"); then the job's rate comes from its own progress (moved records
# over its elapsed time). The job must still be running when the measured run ends.
reencrypt_phase() {
    local tokens
    tokens=$(curl -sS --cacert "$CA" -H "Authorization: Bearer $ADMIN_KEY" "$VAULT_URL/metrics" | awk '$1 ~ /^panvault_tokens_created_total/ { n += $2 } END { print n + 0 }')
    if [ "${tokens:-0}" -lt "$REENC_MIN_TOKENS" ]; then
        log "phase reenc: filling to $REENC_MIN_TOKENS tokens (tokenize for $REENC_FILL)"
        run_wrk new "$VAULT_URL" 3 "$REENC_FILL" reenc-fill
    fi
    stop_vault
    start_vault
    measure "echo-reenc" echo "$ECHO_URL"
    measure "reenc-base" new "$VAULT_URL" 4 5
    curl -sS --cacert "$CA" -X POST -H "Authorization: Bearer $ADMIN_KEY" \
        "$VAULT_URL/v1/sys/keys/reencrypt" >"$TMP/reenc-start.json" || die "reencrypt did not start"
    grep -q '"running":true' "$TMP/reenc-start.json" || die "reencrypt: $(cat "$TMP/reenc-start.json")"
    measure "reenc" new "$VAULT_URL" 6 7
    [ "$(metric panvault_reencrypt_running)" = 1 ] || { FAILED=1; log "phase reenc: the job ended before the measured run did (fill more: REENC_FILL)"; }
    # /metrics, not GET /v1/sys/keys (which counts every record) while the job runs.
    while [ "$(metric panvault_reencrypt_running)" = 1 ]; do sleep 1; done
    curl -sS --cacert "$CA" -H "Authorization: Bearer $ADMIN_KEY" "$VAULT_URL/v1/sys/keys" >"$TMP/reenc-end.json"
    REENC_MOVED=$(job_field moved)
    REENC_SCANNED=$(job_field scanned)
    REENC_MS=$(job_field elapsed_ms)
    grep -q '"error":null' "$TMP/reenc-end.json" || { FAILED=1; log "reencrypt failed: $(grep -o '"reencryption":.*' "$TMP/reenc-end.json")"; }
}

# The proxy phase (issue 5): a Nexi MOTO charge straight to the sandbox (HTTP on loopback, the
# seed card in the body) against the same charge through the vault (HTTPS, the seed token in the
# body, swapped for the card and forwarded to the sandbox), at 1 and at 64 connections.
proxy_phase() {
    SANDBOX_URL=$(grep -o 'through the gateway sandbox (http://[0-9.:]*' "$TMP/vault.out" | grep -o 'http://.*' | head -1)
    [ -n "$SANDBOX_URL" ] || die "no sandbox address in the demo output"
    local conns threads
    for conns in 1 64; do
        threads=$THREADS
        [ "$conns" -lt "$threads" ] && threads=$conns
        curl -sS -X DELETE "$SANDBOX_URL/__log" >/dev/null || true
        THREADS=$threads CONNECTIONS=$conns measure "direct-c$conns" direct "$SANDBOX_URL"
        curl -sS -X DELETE "$SANDBOX_URL/__log" >/dev/null || true
        THREADS=$threads CONNECTIONS=$conns measure "proxy-c$conns" proxy "$VAULT_URL"
    done
    curl -sS -X DELETE "$SANDBOX_URL/__log" >/dev/null || true
}

for phase in $PHASES; do
    if [ "$phase" = reenc ]; then
        reencrypt_phase
        continue
    fi
    if [ "$phase" = proxy ]; then
        proxy_phase
        continue
    fi
    measure "echo-$phase" echo "$ECHO_URL"
    created_before=$(metric 'panvault_http_requests_total{route="/v1/tokens",status="201"}')
    measure "$phase" "$phase" "$VAULT_URL"
    created_after=$(metric 'panvault_http_requests_total{route="/v1/tokens",status="201"}')
    if [ "$phase" = new ]; then
        total=$(($(get requests "$line") + $(get requests "$warm")))
        NEW_201=$((created_after - created_before))
        [ "$NEW_201" -ge "$total" ] || { FAILED=1; log "tokenize: $NEW_201 new tokens (201) for $total requests"; }
    fi
    [ "$phase" = retok ] && RETOK_201=$(($(metric 'panvault_http_requests_total{route="/v1/tokens",status="201"}') - created_after))
done

# --- report --------------------------------------------------------------------------------------
writes=$(metric panvault_group_commit_writes_total)
syncs=$(metric panvault_group_commit_syncs_total)
echo "| phase | req/s | p50 ms | p99 ms | echo just before: req/s, p99 ms | vs echo | server CPU µs/req (echo's) | non-2xx/errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for phase in $PHASES; do
    [ "$phase" = reenc ] || [ "$phase" = proxy ] && continue
    case $phase in
        new) name="tokenize, new cards (durable)" ;;
        retok) name="re-tokenize (existing card)" ;;
        read) name="metadata read" ;;
        reveal) name="reveal ($REVEAL_KEYS keys, round-robin)" ;;
    esac
    ratio=$(awk -v a="${RPS[$phase]}" -v b="${RPS[echo-$phase]}" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %.0f | %.2f | %.2f | %.0f, %.2f | %sx | %s (%s) | %s |\n' "$name" "${RPS[$phase]}" \
        "${P50[$phase]}" "${P99[$phase]}" "${RPS[echo-$phase]}" "${P99[echo-$phase]}" "$ratio" \
        "${CPU[$phase]}" "${CPU[echo-$phase]}" "$((BAD[$phase] + BAD[echo-$phase]))"
done
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a $WARMUP warmup per phase, HTTPS keep-alive," \
    "$(nproc) cores shared by server and wrk. Vault: ${NEW_201:-0} new tokens (201) in the tokenize" \
    "phase, ${RETOK_201:-0} in re-tokenize; group commit $writes writes in $syncs syncs" \
    "($(awk -v w="$writes" -v s="$syncs" 'BEGIN { printf "%.1f", (s ? w / s : 0) }') per fdatasync) over the run." \
    "Reveal: requests round-robin over $REVEAL_KEYS reveal+charge keys," \
    "$(awk -v r="${RPS[reveal]:-0}" -v k="$REVEAL_KEYS" 'BEGIN { printf "%.1f", r / k }') req/s per key (limit 10/s, burst 20), $([ "${BAD[reveal]:-0}" -eq 0 ] && echo "no 429" || echo "SOME FAILED (429 if too few keys)")."

if [ -n "${SANDBOX_URL:-}" ]; then
    echo
    echo "| Nexi MOTO charge | connections | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for c in 1 64; do
        for p in direct proxy; do
            printf '| %s | %s | %.0f | %.3f | %.3f | %s | %s |\n' \
                "$([ $p = direct ] && echo "straight to the sandbox (HTTP, card)" || echo "through the vault (HTTPS, token)")" \
                "$c" "${RPS[$p-c$c]}" "${P50[$p-c$c]}" "${P99[$p-c$c]}" \
                "$([ $p = proxy ] && awk -v a="${P50[proxy-c$c]}" -v b="${P50[direct-c$c]}" 'BEGIN { printf "%.3f", a - b }')" \
                "$([ $p = proxy ] && awk -v a="${P99[proxy-c$c]}" -v b="${P99[direct-c$c]}" 'BEGIN { printf "%.3f", a - b }')"
        done
    done
fi

if [ -n "${REENC_MOVED:-}" ]; then
    echo
    echo "| re-encryption | req/s | p50 ms | p99 ms | server CPU µs/req |"
    echo "|---|---:|---:|---:|---:|"
    for p in reenc-base reenc; do
        printf '| tokenize, %s | %.0f | %.2f | %.2f | %s |\n' \
            "$([ $p = reenc ] && echo "while the job runs" || echo "no job (same vault, just before)")" \
            "${RPS[$p]}" "${P50[$p]}" "${P99[$p]}" "${CPU[$p]}"
    done
    echo
    echo "Live tokenize throughput during re-encryption: $(awk -v a="${RPS[reenc]}" -v b="${RPS[reenc-base]}" 'BEGIN { printf "%.2f", a / b }')x" \
        "of the same phase without it (echo just before: $(printf '%.0f' "${RPS[echo-reenc]}") req/s)." \
        "The job looked at $REENC_SCANNED tokens and moved the $REENC_MOVED under the old DEK in $REENC_MS ms:" \
        "$(awk -v n="$REENC_SCANNED" -v ms="$REENC_MS" 'BEGIN { printf "%.0f", ms ? n * 1000 / ms : 0 }') tokens/s looked at," \
        "$(awk -v n="$REENC_MOVED" -v ms="$REENC_MS" 'BEGIN { printf "%.0f", ms ? n * 1000 / ms : 0 }') records/s moved" \
        "(under load for the first $DURATION plus warmup, then alone)."
fi

stop_vault
"$PANVAULT" audit verify --data "$TMP/vault" >&2 || { FAILED=1; log "audit verify failed"; }
[ "$FAILED" -eq 0 ] || die "FAILED (see above)"
