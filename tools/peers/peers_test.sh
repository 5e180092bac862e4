#!/usr/bin/env bash
# End to end for the peer echo servers of tools/echo_compare.sh: builds them (tools/peers/build.sh
# installs their Debian packages when missing) and drives each, with 1 and 2 threads, through
# echo_bench's pingpong, stream and flood modes (every echoed byte verified), a slow reader of a
# 64 MiB stream (the peer's memory must stay bounded) and idle_memory; and the WebSocket peers of
# tools/ws_compare.sh (Boost.Beast, libwebsockets, gorilla/websocket) through ws_bench. A
# peer that cannot be built or loses a byte fails; nothing is skipped. Prints "ok: PEER" or
# "FAIL: PEER" per peer, as .ci/run counts them.
#
#   tools/peers/peers_test.sh
set -uo pipefail
cd "$(dirname "$0")/../.."

work="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT

if ! tools/peers/build.sh "$work/peers" >"$work/build.log" 2>&1; then
  cat "$work/build.log"
  for peer in uv_echo event_echo asio_echo go_echo beast_ws lws_ws gorilla_ws; do
    echo "FAIL: $peer (build)"
  done
  exit 1
fi
if ! tools/bazel build //tools:echo_bench //tools:idle_memory //tools:ws_bench \
  >"$work/bazel.log" 2>&1; then
  cat "$work/bazel.log"
  echo "FAIL: echo_bench (build)"
  exit 1
fi
cp bazel-bin/tools/echo_bench bazel-bin/tools/idle_memory bazel-bin/tools/ws_bench "$work/"

start() {  # start COMMAND...: sets server_pid and port
  local log="$work/server.out"
  : >"$log"
  "$@" >"$log" 2>&1 &
  server_pid=$!
  port=""
  for _ in $(seq 200); do
    grep -q "listening on" "$log" && break
    sleep 0.05
  done
  port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log" | head -1)
  [[ -n "$port" ]] || { echo "  did not start: $*"; cat "$log"; return 1; }
}
stop() { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""; }

failed=0
for peer in uv_echo event_echo asio_echo go_echo; do
  problems=0
  for threads in 1 2; do
    if ! start "$work/peers/$peer" --port=0 --threads="$threads"; then
      problems=$((problems + 1))
      stop
      continue
    fi
    common=(--addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s --json)
    for mode in "--mode=pingpong --connections=20 --size=700" \
      "--mode=stream --connections=5 --size=100000 --window=4 --threads=2" \
      "--mode=stream --connections=4 --size=512 --window=16" \
      "--mode=flood --connections=10"; do
      # shellcheck disable=SC2086
      output=$(timeout 30 "$work/echo_bench" "${common[@]}" $mode 2>&1)
      if [[ $? -ne 0 || "$output" != *'"ok":true'* || "$output" == *'"messages":0,'* ]]; then
        echo "  $peer --threads=$threads $mode: $output"
        problems=$((problems + 1))
      fi
    done
    # A client that writes 64 MiB and only starts reading its echo a second later: the peer
    # must hold its buffering bounded (reading pauses, or the write blocks) and lose nothing.
    output=$(timeout 60 python3 - "$port" "$server_pid" <<'PYEOF' 2>&1
import socket, sys, threading, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
payload = bytes(range(251)) * (64 * 1024 * 1024 // 251)
conn = socket.create_connection(("127.0.0.1", port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
before = rss_kib()
writer = threading.Thread(target=conn.sendall, args=(payload,))
writer.start()
time.sleep(1.0)
growth = rss_kib() - before
received = bytearray()
while len(received) < len(payload):
    chunk = conn.recv(1 << 20)
    if not chunk:
        break
    received += chunk
writer.join()
ok = bytes(received) == payload and growth < 32 * 1024
print(f"slow reader: {len(received)} of {len(payload)} bytes back, RSS grew {growth} KiB: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PYEOF
    ) || { echo "  $peer --threads=$threads: $output"; problems=$((problems + 1)); }
    output=$(timeout 30 "$work/idle_memory" --addr="127.0.0.1:$port" --pid="$server_pid" --connections=300 --json 2>&1)
    if [[ "$output" != *'"connections":300'* ]]; then
      echo "  $peer --threads=$threads idle_memory: $output"
      problems=$((problems + 1))
    fi
    stop
  done
  if ((problems)); then
    echo "FAIL: $peer"
    failed=$((failed + 1))
  else
    echo "ok: $peer"
  fi
done

# The WebSocket peers of tools/ws_compare.sh, with 1 and 2 threads (lws_ws has one only),
# through ws_bench: echo of small and of 100 KB messages (every byte verified), and a
# broadcast on /chat that must reach every subscriber in order (across threads with 2).
for peer in beast_ws lws_ws gorilla_ws; do
  problems=0
  thread_counts=(1 2)
  [[ "$peer" == lws_ws ]] && thread_counts=(1)
  for threads in "${thread_counts[@]}"; do
    if ! start "$work/peers/$peer" --port=0 --threads="$threads"; then
      problems=$((problems + 1))
      stop
      continue
    fi
    common=(--addr="127.0.0.1:$port" --duration=0.5s --warmup=0.1s --json)
    for mode in "--mode=echo --connections=20 --size=700" \
      "--mode=echo --connections=4 --size=100000 --window=3" \
      "--mode=broadcast --connections=200 --size=512 --window=4"; do
      # shellcheck disable=SC2086
      output=$(timeout 60 "$work/ws_bench" "${common[@]}" $mode 2>&1)
      if [[ $? -ne 0 || "$output" != *'"ok":true'* ]]; then
        echo "  $peer --threads=$threads $mode: $output"
        problems=$((problems + 1))
      fi
    done
    stop
  done
  if ((problems)); then
    echo "FAIL: $peer"
    failed=$((failed + 1))
  else
    echo "ok: $peer"
  fi
done
exit "$failed"
