#!/usr/bin/env bash
# What batching and the UDP offloads are worth: examples/udp_echo under tools/udp_bench (every
# datagram checked), the server pinned to CPU 0 and the client to CPU 1, in three builds of the
# same server (flags of one binary):
#   batched          recvmmsg and sendmmsg of up to 64, GSO on (the defaults)
#   batched, no GSO  the same, each reply its own datagram in the sendmmsg
#   batch 1          one recvmmsg and one sendmmsg per datagram: what a server that calls
#                    recvfrom and sendto per datagram pays (the same two system calls a datagram)
# and, where the client sends with GSO, the batched server with GRO as well. Per row: echoes/s,
# the share lost, the server's CPU per echo (utime+stime from /proc/PID/stat over the timed
# window), datagrams per recvmmsg call (the server's own count) and system calls per echo (one
# datagram in, one out: every system call the server made over the timed window of a run of
# its own, counted by `perf stat -e raw_syscalls:sys_enter -p PID`, which costs the server a
# little per call; see udp_bench --syscalls).
#
#   tools/udp_compare.sh [--rounds=5] [--duration=5s] [--out=bench-out/udp]
#
# Installs linux-perf when missing (as root). Medians of the rounds; within a round the builds
# alternate, in reverse order every other round.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 duration=5s out="bench-out/udp"
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
if ! command -v perf >/dev/null; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "udp_compare: needs: sudo apt-get install -y linux-perf" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf >&2
fi

work="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && kill -INT "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
tools/bazel build --config=opt //examples/udp_echo:udp_echo_server //tools:udp_bench >&2
cp bazel-bin/examples/udp_echo/udp_echo_server bazel-bin/tools/udp_bench "$work/"
mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh

flags_of() {  # the server's flags for a label
  case "$1" in
    "batched") echo "" ;;
    "batched, no GSO") echo "--gso=false" ;;
    "batched, GRO") echo "--gro" ;;
    "batch 1") echo "--batch=1 --gso=false" ;;
  esac
}

# start LABEL: a server in a session of its own; sets server_pid and port.
start() {
  local label="$1"
  # shellcheck disable=SC2046
  setsid taskset -c 0 "$work/udp_echo_server" --port=0 --loops=1 --receive_buffer=4194304 \
    $(flags_of "$label") >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    sleep 0.05
  done
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/server.out" | head -1)
  [[ -n "$port" ]] || { echo "$label did not start" >&2; cat "$work/server.err" >&2; exit 1; }
}
stop_server() {
  kill -INT "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
# The server's exit line: datagrams received, recvmmsg calls.
exit_counts() {
  sed -n 's/^udp: \([0-9]*\) datagrams in \([0-9]*\) recvmmsg calls.*/\1 \2/p' "$work/server.err"
}

# measure LOAD LABEL ROUND CLIENT_FLAGS...: one udp_bench run; a row of results.tsv: load, label,
# round, echoes/s, lost %, server CPU ns per echo, datagrams per recvmmsg, client CPU %, server
# CPU %.
measure() {
  local load="$1" label="$2" round="$3"
  shift 3
  start "$label"
  local report status=0
  report=$(taskset -c 1 "$work/udp_bench" --addr="127.0.0.1:$port" --duration="$duration" \
    --server_pid="$server_pid" --json "$@" 2>&1) || status=$?
  stop_server
  if [[ "$report" != *'"ok":true'* ]]; then
    echo "udp_bench failed ($status) against $label: $report" >&2
    exit 1
  fi
  local per_call
  per_call=$(exit_counts | awk '{ printf "%.1f", ($2 > 0) ? $1 / $2 : 0 }')
  printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$label" "$round" \
    "$(json_field "$report" echoes_per_s)" "$(json_field "$report" loss_pct)" \
    "$(json_field "$report" server_cpu_ns_per_echo)" "$per_call" \
    "$(json_field "$report" client_cpu_pct)" "$(json_field "$report" server_cpu_pct)" >>"$results"
  echo "  round $round $load, $label: $(json_field "$report" echoes_per_s)/s," \
    "$(json_field "$report" server_cpu_ns_per_echo) ns/echo" >&2
}

# count_syscalls LABEL CLIENT_FLAGS...: one run with perf counting; prints the server's system
# calls per echo.
count_syscalls() {
  local label="$1"
  shift
  start "$label"
  local report
  report=$(taskset -c 1 "$work/udp_bench" --addr="127.0.0.1:$port" --duration="$duration" \
    --server_pid="$server_pid" --syscalls --json "$@" 2>&1) || true
  stop_server
  if [[ "$report" != *'"ok":true'* ]]; then
    echo "udp_bench --syscalls failed against $label: $report" >&2
    exit 1
  fi
  json_field "$report" server_syscalls_per_echo
}

declare -A loads=(
  ["16 sockets x 8 in flight, 512 B"]="--clients=16 --window=8 --size=512"
  ["64 sockets x 16 in flight, 512 B"]="--clients=64 --window=16 --size=512"
  ["16 sockets x 32 in flight, 1200 B, client sends with GSO"]="--clients=16 --window=32 --size=1200 --gso"
)
load_order=("16 sockets x 8 in flight, 512 B" "64 sockets x 16 in flight, 512 B"
  "16 sockets x 32 in flight, 1200 B, client sends with GSO")
labels_for() {
  if [[ "$1" == *GSO* ]]; then
    printf '%s\n' "batched" "batched, GRO" "batch 1"
  else
    printf '%s\n' "batched" "batched, no GSO" "batch 1"
  fi
}

declare -A syscalls
for load in "${load_order[@]}"; do
  echo "== $load" >&2
  mapfile -t labels < <(labels_for "$load")
  # shellcheck disable=SC2086
  for ((round = 1; round <= rounds; round++)); do
    order=("${labels[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#labels[@]} - 1; i >= 0; i--)); do order+=("${labels[$i]}"); done
    fi
    for label in "${order[@]}"; do measure "$load" "$label" "$round" ${loads[$load]}; done
  done
  for label in "${labels[@]}"; do
    # shellcheck disable=SC2086
    syscalls["$load/$label"]=$(count_syscalls "$label" ${loads[$load]})
  done
done

{
  echo "Command: tools/udp_compare.sh $*; medians of $rounds rounds of $duration; server (one loop," \
    "--receive_buffer=4194304) on CPU 0, udp_bench on CPU 1; $(uname -sr)."
  for load in "${load_order[@]}"; do
    mapfile -t labels < <(labels_for "$load")
    base_rate=$(column_median "$load" "batch 1" 4)
    base_cpu=$(column_median "$load" "batch 1" 6)
    echo
    echo "**$load**"
    echo
    echo "| server | echoes/s | vs batch 1 | lost % | server CPU ns/echo | vs batch 1 | server CPU % | client CPU % | datagrams per recvmmsg | system calls per echo |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for label in "${labels[@]}"; do
      awk -v l="$label" -v r="$(column_median "$load" "$label" 4)" -v br="$base_rate" \
        -v lost="$(column_median "$load" "$label" 5)" -v c="$(column_median "$load" "$label" 6)" \
        -v bc="$base_cpu" -v pc="$(column_median "$load" "$label" 7)" \
        -v s="${syscalls["$load/$label"]}" -v cc="$(column_median "$load" "$label" 8)" \
        -v sc="$(column_median "$load" "$label" 9)" 'BEGIN {
          printf "| %s | %.0f | %.2fx | %.4f | %.0f | %.2fx | %.0f | %.0f | %.1f | %.3f |\n", l, r,
            (br > 0) ? r / br : 0, lost, c, (bc > 0) ? c / bc : 0, sc, cc, pc, s }'
    done
  done
} | tee "$out/results.md"
