#!/usr/bin/env bash
# gev's WebSocket server against the WebSocket servers a C++ (or Go) user would pick instead,
# on this machine, in one run: Boost.Beast 1.74, libwebsockets 4.1 and gorilla/websocket (Go),
# built from Debian's packages by tools/peers/build.sh (tools/peers/{beast_ws.cc,lws_ws.c,
# gorilla_ws.go}), every server with one thread. Driven by tools:ws_bench, which checks every
# byte:
#
#   echo of 512 B and of 16 KiB binary messages over 100 and over 1,000 connections, one
#     message in flight per connection (examples/websocket:echo_server for gev);
#   broadcast: one publisher's 512 B text messages to 10,000 subscribers (and itself) on /chat,
#     8 messages in flight (examples/websocket:chat_server for gev, Service::Publish).
#
#   tools/ws_compare.sh [--rounds=3] [--duration=5s] [--only=echo,broadcast]
#                       [--out=bench-out/websocket]
#
# The server gets CPU 0 and ws_bench CPU 1 (with two or more CPUs); within a round the servers
# alternate, in reverse order every other round. Per row a Markdown table of medians: messages
# (echo) or deliveries (broadcast) per second, the server's CPU time per message (utime+stime
# of all its threads from /proc/PID/stat over ws_bench's timed window, after its connections
# are set up and a 1 s warm-up) and the share of a CPU the server and the client used: the one
# near 100 % is what bounded the rate. Writes results.tsv and results.md to --out.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 duration=5s only="echo,broadcast" out="bench-out/websocket"
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --only=*) only="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }

bin="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$bin"' EXIT
tools/peers/build.sh "$bin" >&2
tools/bazel build --config=opt //examples/websocket:echo_server //examples/websocket:chat_server \
  //tools:ws_bench >&2
cp bazel-bin/examples/websocket/echo_server bazel-bin/examples/websocket/chat_server \
  bazel-bin/tools/ws_bench "$bin/"

mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh
# 10,000 subscribers need more descriptors than the usual soft limit, in every server.
ulimit -n "$(ulimit -Hn)"
if (($(nproc) >= 2)); then
  server_pin="taskset -c 0" client_pin="taskset -c 1"
else
  server_pin="" client_pin=""
fi

# start LABEL KIND: starts that server (KIND echo or broadcast) on a free port; sets
# server_pid and port from its "listening on" line.
start_server() {
  local label="$1" kind="$2" log="$bin/server.log"
  local command
  case "$label" in
    gev)
      if [[ "$kind" == echo ]]; then command=("$bin/echo_server"); else command=("$bin/chat_server"); fi
      command+=(--port=0 --loops=1)
      ;;
    "Boost.Beast 1.74") command=("$bin/beast_ws" --port=0 --threads=1) ;;
    "libwebsockets 4.1") command=("$bin/lws_ws" --port=0 --threads=1) ;;
    "gorilla/websocket 1.5") command=("$bin/gorilla_ws" --port=0 --threads=1) ;;
    *) echo "no server $label" >&2; exit 2 ;;
  esac
  : >"$log"
  $server_pin "${command[@]}" >"$log" 2>&1 &
  server_pid=$!
  port=""
  for _ in $(seq 200); do
    port=$(sed -n 's/^listening on [0-9.]*:\([0-9]*\)$/\1/p' "$log" | head -1)
    [[ -n "$port" ]] && return 0
    sleep 0.05
  done
  echo "$label did not start: $(cat "$log")" >&2
  exit 1
}

# row NAME KIND WS_BENCH_ARGS...: $rounds rounds over every server.
labels=("gev" "Boost.Beast 1.74" "libwebsockets 4.1" "gorilla/websocket 1.5")
row() {
  local name="$1" kind="$2"
  shift 2
  echo "== $name" >&2
  for ((round = 1; round <= rounds; round++)); do
    local order=("${labels[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#labels[@]} - 1; i >= 0; i--)); do order+=("${labels[$i]}"); done
    fi
    for label in "${order[@]}"; do
      start_server "$label" "$kind"
      local json
      json=$($client_pin "$bin/ws_bench" --addr="127.0.0.1:$port" --mode="$kind" \
        --duration="$duration" --server_pid="$server_pid" --json "$@") || true
      stop
      if [[ "$(json_field "$json" ok)" != "true" ]]; then
        echo "  ! round $round $label: ws_bench reported errors: $json" >&2
        continue
      fi
      printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\n' "$name" "$label" "$round" \
        "$(json_field "$json" msgs_per_s)" "$(json_field "$json" server_cpu_ns_per_msg)" \
        "$(json_field "$json" server_cpu_pct)" "$(json_field "$json" client_cpu_pct)" >>"$results"
      echo "  round $round $label: $(json_field "$json" msgs_per_s)/s," \
        "$(json_field "$json" server_cpu_ns_per_msg) ns/msg" >&2
    done
  done
}

if wants echo; then
  for size in 512 16384; do
    for connections in 100 1000; do
      row "echo $size B x $connections connections" echo --size="$size" \
        --connections="$connections"
    done
  done
fi
if wants broadcast; then
  row "broadcast 512 B to 10,000 subscribers" broadcast --size=512 --connections=10000 --window=8
fi

{
  echo "Command: tools/ws_compare.sh $*; rounds $rounds of $duration; $(nproc) CPUs, server pinned" \
    "to CPU 0, tools:ws_bench to CPU 1; every server one thread (gev's acceptor thread beside its" \
    "loop, idle while measured)."
  while IFS= read -r name; do
    base_rate=$(column_median "$name" gev 4)
    base_cpu=$(column_median "$name" gev 5)
    echo
    echo "**$name** (medians of $rounds rounds)"
    for label in "${labels[@]}"; do
      passed=$(awk -F'\t' -v n="$name" -v l="$label" '$1 == n && $2 == l' "$results" | wc -l)
      ((passed == rounds)) || echo "(**$label: $passed of $rounds rounds passed** ws_bench's checks)"
    done
    echo
    echo "| server | msgs/s | vs gev | server CPU ns/msg | vs gev | server CPU | client CPU |"
    echo "|---|---|---|---|---|---|---|"
    while IFS= read -r label; do
      awk -v l="$label" -v r="$(column_median "$name" "$label" 4)" -v br="$base_rate" \
        -v c="$(column_median "$name" "$label" 5)" -v bc="$base_cpu" \
        -v s="$(column_median "$name" "$label" 6)" -v k="$(column_median "$name" "$label" 7)" '
        BEGIN { printf "| %s | %.0f | %.2fx | %.0f | %.2fx | %.0f%% | %.0f%% |\n", l, r,
                       (br > 0) ? r / br : 0, c, (bc > 0) ? c / bc : 0, s, k }'
    done < <(labels_of "$name")
  done < <(names)
} | tee "$out/results.md"
