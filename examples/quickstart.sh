#!/usr/bin/env bash
# NOVA quickstart: NOVAS with a generated certificate and token, plus a local
# NOVAC, and one TCP resource reached through the tunnel. Everything stays on
# 127.0.0.1; state goes to ./quickstart-data. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-$PWD/quickstart-data}
HTTP_PORT=${HTTP_PORT:-8080}
AGENT_PORT=${AGENT_PORT:-9022}
RESOURCE_PORT=${RESOURCE_PORT:-40000}

echo "==> building novas and novac (release)"
cargo build --release --bins --quiet
BIN=$PWD/target/release
mkdir -p "$DATA"

# The enrollment token agents present; generated once and kept.
if [ ! -s "$DATA/agent-token" ]; then
  (umask 077; "$BIN/novas" gen-token > "$DATA/agent-token")
fi
TOKEN=$(cat "$DATA/agent-token")

# One TCP resource: NOVAS's own health endpoint, but dialled by the agent, so
# a request on port $RESOURCE_PORT travels user -> NOVAS -> tunnel -> NOVAC -> target.
cat > "$DATA/resources.yaml" <<YAML
resources:
  - name: demo-web
    kind: tcp
    target: "127.0.0.1:$HTTP_PORT"
    listen: $RESOURCE_PORT
    agent: { tags: { Env: quickstart } }
YAML

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "==> starting NOVAS (agent port $AGENT_PORT, http $HTTP_PORT, logs in $DATA/novas.log)"
NOVAS_AGENT_TOKEN=$TOKEN NOVAS_BIND=127.0.0.1 NOVAS_AGENT_PORT=$AGENT_PORT \
NOVAS_HTTP_PORT=$HTTP_PORT NOVAS_DATA_DIR=$DATA NOVAS_RESOURCES=$DATA/resources.yaml \
  "$BIN/novas" > "$DATA/novas.out" 2> "$DATA/novas.log" &
pids+=($!)
for _ in $(seq 50); do grep -q '^listening:' "$DATA/novas.out" 2>/dev/null && break; sleep 0.2; done
grep -q '^listening:' "$DATA/novas.out" || { echo "NOVAS did not start:"; cat "$DATA/novas.log"; exit 1; }
FP=$("$BIN/novas" fingerprint --data-dir "$DATA")

echo "==> starting NOVAC 'quickstart-agent' (pinned fingerprint $FP)"
NOVAC_SERVER=127.0.0.1:$AGENT_PORT NOVAC_TOKEN=$TOKEN NOVAC_NAME=quickstart-agent \
NOVAC_TAGS="Env=quickstart;VPC=local" NOVAC_SERVER_FINGERPRINT=$FP NOVAC_ALLOW=127.0.0.1/32 \
  "$BIN/novac" 2> "$DATA/novac.log" &
pids+=($!)

export NOVAS_HTTP_PORT=$HTTP_PORT NOVAS_DATA_DIR=$DATA
for _ in $(seq 50); do "$BIN/novas" tunnels 2>/dev/null | grep -q quickstart-agent && break; sleep 0.2; done

echo
echo "Enrollment token (NOVAS_AGENT_TOKEN / NOVAC_TOKEN): $TOKEN"
echo "Server fingerprint (NOVAC_SERVER_FINGERPRINT):       $FP"
echo
echo "==> registered tunnels (novas tunnels):"
"$BIN/novas" tunnels
echo
echo "==> GET /healthz through the tunnel (127.0.0.1:$RESOURCE_PORT):"
exec 3<>"/dev/tcp/127.0.0.1/$RESOURCE_PORT"
printf 'GET /healthz HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n' >&3
cat <&3
exec 3<&-
echo
echo "Running. Try: NOVAS_HTTP_PORT=$HTTP_PORT NOVAS_DATA_DIR=$DATA $BIN/novas tunnels"
echo "Press Ctrl-C to stop."
wait
