#!/usr/bin/env bash
# End to end for the benchmark tools: echo_bench verifies a correct echo server (exit 0, JSON
# with ok:true) in every mode, over TLS too, and catches a wrong one (exit 1); idle_memory
# measures a server; tls_handshake_bench completes full and resumed handshakes against the
# HTTPS example (certificate made by openssl req here); ws_bench verifies gev's WebSocket echo
# (small and 100 KB messages) and chat (broadcast) servers and catches a server that flips a bit,
# one that never upgrades and a broadcast that stalls; udp_bench verifies gev's UDP echo (plain,
# and GSO into GRO) and catches a flipped bit, a lost datagram, two swapped ones and no server.
set -euo pipefail

bench=tools/echo_bench
baseline=tools/raw_epoll_echo
idle_memory=tools/idle_memory
gev_echo=examples/echo/echo_server
not_echo=examples/pushmessage/push_server
tls_echo=examples/tls_echo/tls_echo_server
http_server=examples/http/http_server
handshake_bench=tools/tls_handshake_bench
ws_bench=tools/ws_bench
ws_echo=examples/websocket/echo_server
ws_chat=examples/websocket/chat_server
udp_bench=tools/udp_bench
udp_echo=examples/udp_echo/udp_echo_server
failures=0
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true' EXIT

start() {  # start COMMAND...: sets server_pid and port
  local log="$TEST_TMPDIR/server.$RANDOM.out"
  "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do
    grep -q "listening on" "$log" && break
    sleep 0.05
  done
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log" | head -1)
  [[ -n "$port" ]] || { echo "server did not start: $*"; cat "$log"; exit 1; }
}
stop() { kill "$server_pid"; wait "$server_pid" || true; server_pid=""; }
# A stream message's latency runs from its first byte written to its last byte echoed: on
# loopback, well under 10 s (a message whose start went unrecorded would show the clock's epoch).
check_stream_latency() {  # after a check of a stream run: $1 = description
  local p99
  p99=$(sed -n 's/.*"p99_us":\([0-9.]*\).*/\1/p' <<<"$output")
  awk -v p="$p99" 'BEGIN { exit !(p > 0 && p < 1e7) }' ||
    { echo "FAIL: $1 p99 ${p99} us: $output"; failures=$((failures + 1)); }
}
check() {  # check DESCRIPTION EXPECTED_STATUS COMMAND...
  local description="$1" expected="$2"
  shift 2
  local status=0
  output=$("$@" 2>&1) || status=$?
  if [[ "$status" != "$expected" ]]; then
    echo "FAIL: $description: exit $status, wanted $expected"
    echo "$output"
    failures=$((failures + 1))
  else
    echo "ok: $description"
  fi
}

for server in "$baseline --port=0 --threads=2" "$gev_echo --port=0 --loops=2"; do
  # shellcheck disable=SC2086
  start $server
  common=(--addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s --json)
  check "$server pingpong" 0 "$bench" "${common[@]}" --mode=pingpong --connections=20 --size=700
  [[ "$output" == *'"ok":true'* && "$output" == *'"p99_us":'* ]] || { echo "FAIL: JSON: $output"; failures=$((failures + 1)); }
  check "$server stream" 0 "$bench" "${common[@]}" --mode=stream --connections=5 --size=100000 --window=4 --threads=2
  check_stream_latency "$server stream"
  check "$server small-message stream" 0 "$bench" "${common[@]}" --mode=stream --connections=4 --size=512 --window=16
  check_stream_latency "$server small-message stream"
  check "$server flood" 0 "$bench" "${common[@]}" --mode=flood --connections=10
  stop
done

start "$not_echo" --port=0 --loops=1 --interval=10ms
check "a server that does not echo is caught" 1 "$bench" --addr="127.0.0.1:$port" \
  --duration=0.5s --warmup=0s --mode=pingpong --connections=5
[[ "$output" == *"mismatches"* ]] || { echo "FAIL: no mismatch report: $output"; failures=$((failures + 1)); }
stop

start "$gev_echo" --port=0 --loops=1
check "idle_memory" 0 "$idle_memory" --addr="127.0.0.1:$port" --pid="$server_pid" --connections=300 --json
[[ "$output" == *'"connections":300'* ]] || { echo "FAIL: idle_memory output: $output"; failures=$((failures + 1)); }
check "idle_memory --burst" 0 "$idle_memory" --addr="127.0.0.1:$port" --pid="$server_pid" --connections=300 --json --burst
[[ "$output" == *'"connections":300'* && "$output" == *'"failures":0'* ]] ||
  { echo "FAIL: idle_memory --burst output: $output"; failures=$((failures + 1)); }
stop

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$TEST_TMPDIR/key.pem" -out "$TEST_TMPDIR/cert.pem" \
  2>/dev/null
start "$tls_echo" --port=0 --loops=1 --cert="$TEST_TMPDIR/cert.pem" --key="$TEST_TMPDIR/key.pem"
common=(--addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s --json --tls)
check "TLS pingpong" 0 "$bench" "${common[@]}" --mode=pingpong --connections=20 --size=700
check "TLS stream" 0 "$bench" "${common[@]}" --mode=stream --connections=5 --size=100000 --window=4
check "TLS 1.2 stream" 0 "$bench" "${common[@]}" --tls_version=1.2 --mode=stream --connections=2 \
  --size=100000 --window=4
check "plain TCP against TLS is caught" 1 "$bench" --addr="127.0.0.1:$port" --duration=0.5s \
  --warmup=0s --mode=pingpong --connections=2
stop

start "$http_server" --port=0 --loops=1 --tls_cert="$TEST_TMPDIR/cert.pem" \
  --tls_key="$TEST_TMPDIR/key.pem"
check "full handshakes" 0 "$handshake_bench" --addr="127.0.0.1:$port" --duration=0.5s \
  --warmup=0.1s --concurrency=4 --brief
read -r completed _ resumed errors <<<"$output"
awk -v c="$completed" -v r="$resumed" -v e="$errors" 'BEGIN { exit !(c > 0 && r == 0 && e == 0) }' ||
  { echo "FAIL: full handshakes: $output"; failures=$((failures + 1)); }
check "resumed handshakes" 0 "$handshake_bench" --addr="127.0.0.1:$port" --duration=0.5s \
  --warmup=0.2s --concurrency=4 --resume --brief
read -r completed _ resumed errors <<<"$output"
awk -v c="$completed" -v r="$resumed" -v e="$errors" 'BEGIN { exit !(c > 0 && r >= 0.99 && e == 0) }' ||
  { echo "FAIL: resumed handshakes: $output"; failures=$((failures + 1)); }
stop

start "$ws_echo" --port=0 --loops=2
common=(--addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s --json)
check "ws_bench echo" 0 "$ws_bench" "${common[@]}" --connections=20 --size=700 --server_pid="$server_pid"
[[ "$output" == *'"ok":true'* && "$output" != *'"server_cpu_ns_per_msg":-1'* ]] ||
  { echo "FAIL: ws_bench JSON: $output"; failures=$((failures + 1)); }
check "ws_bench echo, 100 KB messages in flight" 0 "$ws_bench" "${common[@]}" --connections=4 \
  --size=100000 --window=3
check "ws_bench broadcast at an echo server stalls and is caught" 1 "$ws_bench" "${common[@]}" \
  --mode=broadcast --connections=3 --stall_timeout=0.3s
[[ "$output" == *"no message for"* ]] || { echo "FAIL: no stall reported: $output"; failures=$((failures + 1)); }
check "ws_bench refuses broadcast messages too short to number" 2 "$ws_bench" "${common[@]}" \
  --mode=broadcast --size=10
stop
start "$ws_chat" --port=0 --loops=2
check "ws_bench broadcast" 0 "$ws_bench" --addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s \
  --json --mode=broadcast --connections=200 --window=4
[[ "$output" == *'"ok":true'* ]] || { echo "FAIL: ws_bench JSON: $output"; failures=$((failures + 1)); }
stop
start /usr/bin/python3 tools/testing/ws_corrupting_server.py
check "a flipped bit is caught" 1 "$ws_bench" --addr="127.0.0.1:$port" --duration=0.5s \
  --warmup=0s --connections=1 --json
[[ "$output" == *'"mismatches":1'* ]] || { echo "FAIL: no mismatch reported: $output"; failures=$((failures + 1)); }
stop
start /usr/bin/python3 tools/testing/ws_corrupting_server.py --drop
check "an echo lost on one of two connections is caught" 1 "$ws_bench" \
  --addr="127.0.0.1:$port" --duration=1s --warmup=0s --connections=2 --stall_timeout=0.3s
[[ "$output" == *"no message for the stall timeout"* ]] ||
  { echo "FAIL: no stall reported: $output"; failures=$((failures + 1)); }
stop
start "$gev_echo" --port=0 --loops=1
check "a server that does not upgrade is caught" 1 "$ws_bench" --addr="127.0.0.1:$port" \
  --duration=0.5s --warmup=0s --connections=2
stop

start "$udp_echo" --port=0 --loops=2
check "udp_bench echo" 0 "$udp_bench" --addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s \
  --clients=8 --window=4 --size=700 --server_pid="$server_pid" --json
[[ "$output" == *'"ok":true'* && "$output" == *'"lost":0,'* &&
  "$output" != *'"server_cpu_ns_per_echo":-1'* ]] ||
  { echo "FAIL: udp_bench JSON: $output"; failures=$((failures + 1)); }
stop
start "$udp_echo" --port=0 --loops=1 --gro
check "udp_bench echo, GSO into GRO" 0 "$udp_bench" --addr="127.0.0.1:$port" --duration=0.5s \
  --warmup=0.1s --clients=4 --window=16 --size=1200 --gso --json
[[ "$output" == *'"ok":true'* && "$output" == *'"lost":0,'* ]] ||
  { echo "FAIL: udp_bench JSON: $output"; failures=$((failures + 1)); }
stop
udp_wrong=(/usr/bin/python3 tools/testing/udp_wrong_echo_server.py)
udp_common=(--duration=0.5s --warmup=0s --clients=2 --window=2 --stall_timeout=0.2s --json)
start "${udp_wrong[@]}" --flip
check "a flipped bit in a datagram is caught" 1 "$udp_bench" --addr="127.0.0.1:$port" "${udp_common[@]}"
[[ "$output" == *'"errors":1,'* && "$output" == *"not a datagram this socket sent"* ]] ||
  { echo "FAIL: no mismatch reported: $output"; failures=$((failures + 1)); }
stop
start "${udp_wrong[@]}" --drop
check "a datagram never echoed is counted lost" 1 "$udp_bench" --addr="127.0.0.1:$port" \
  "${udp_common[@]}" --max_loss=0
[[ "$output" == *'"lost":1,'* && "$output" == *'"errors":0,'* ]] ||
  { echo "FAIL: no loss reported: $output"; failures=$((failures + 1)); }
stop
start "${udp_wrong[@]}" --swap
check "two datagrams echoed out of order are caught" 1 "$udp_bench" --addr="127.0.0.1:$port" \
  "${udp_common[@]}"
[[ "$output" == *"out of order"* ]] ||
  { echo "FAIL: no reordering reported: $output"; failures=$((failures + 1)); }
# The same port with nothing on it: the kernel's ICMP port unreachable reaches the client.
stop
check "no server is an error, not a stall" 1 "$udp_bench" --addr="127.0.0.1:$port" "${udp_common[@]}"
[[ "$output" == *"Connection refused"* ]] ||
  { echo "FAIL: no refusal reported: $output"; failures=$((failures + 1)); }
check "udp_bench refuses a GSO window past 64" 2 "$udp_bench" --gso --window=65 --size=100

check "bad flags are refused" 2 "$bench" --mode=sideways
echo "$failures failures"
exit "$failures"
