#!/usr/bin/env bash
# Compares examples/proxy (gev, one loop) with HAProxy in mode tcp (one thread) in front of the
# same echo backend, under the same load, on this machine.
#
#   tools/proxy_compare.sh [--rounds=5] [--duration=5s] [--warmup=1s] [--out=bench-out/proxy]
#                          [--only=pingpong,stream]
#
# The backend is tools/raw_epoll_echo (one thread); echo_bench drives the proxy under test,
# which relays to the backend. The proxy runs alone on the last CPU, the backend and the client
# share the others (on 2 CPUs: proxy on CPU 1, backend and client on CPU 0), so each proxy
# gets one core and the same neighbours. Within a round the two proxies alternate (reversed
# every other round). The proxy's CPU time per message is utime+stime from /proc/PID/stat over
# the timed window. Installs haproxy from Debian when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 duration=5s warmup=1s out=bench-out/proxy only="pingpong,stream"
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --only=*) only="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }

if ! command -v haproxy >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >&2
  fi
  command -v haproxy >/dev/null 2>&1 || { echo "proxy_compare: haproxy is missing (apt-get install haproxy)" >&2; exit 1; }
fi

tools/bazel build --config=opt //tools:echo_bench //tools:raw_epoll_echo //examples/proxy:proxy >&2
bin="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$bin"
}
trap cleanup EXIT
for f in tools/echo_bench tools/raw_epoll_echo examples/proxy/proxy; do cp "bazel-bin/$f" "$bin/"; done
mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
clk_tck=$(getconf CLK_TCK)
subject=proxy
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh

cpus=$(nproc)
if ((cpus >= 2)); then
  proxy_pin="taskset -c $((cpus - 1))"
  rest_pin="taskset -c 0-$((cpus - 2))"
else
  proxy_pin="" rest_pin=""
fi

wait_for_line() {  # FILE PATTERN
  for _ in $(seq 200); do
    grep -q "$2" "$1" && return 0
    sleep 0.05
  done
  echo "no \"$2\" in $1:" >&2
  cat "$1" >&2
  return 1
}


$rest_pin "$bin/raw_epoll_echo" --port=0 --threads=1 >"$bin/backend.out" 2>&1 &
backend_pid=$!
pids+=("$backend_pid")
wait_for_line "$bin/backend.out" "listening on"
backend_port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$bin/backend.out" | head -1)

start_proxy() {  # LABEL: sets proxy_pid, proxy_port
  case "$1" in
    haproxy*)
      proxy_port=$(free_port)
      cat >"$bin/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend relay
  bind 127.0.0.1:$proxy_port
  default_backend echo
backend echo
  server backend 127.0.0.1:$backend_port
CFG
      $proxy_pin haproxy -db -f "$bin/haproxy.cfg" >"$bin/proxy.out" 2>&1 &
      proxy_pid=$!
      for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
        sleep 0.05
      done
      ;;
    gev*)
      $proxy_pin "$bin/proxy" --port=0 --loops=1 --upstream="127.0.0.1:$backend_port" \
        >"$bin/proxy.out" 2>&1 &
      proxy_pid=$!
      wait_for_line "$bin/proxy.out" "listening on"
      proxy_port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$bin/proxy.out" | head -1)
      ;;
  esac
  pids+=("$proxy_pid")
}

stop_proxy() {
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
}

labels=("haproxy $(haproxy -v | sed -n 's/^HAProxy version \([0-9.]*\).*/\1/p') mode tcp, nbthread 1" "gev examples/proxy, 1 loop")

run_workload() {  # NAME "CLIENT ARGS"
  local name="$1" client_args="$2"
  echo "== $name ($rounds rounds)" >&2
  for ((round = 1; round <= rounds; round++)); do
    local order=("${labels[@]}")
    ((round % 2 == 0)) && order=("${labels[1]}" "${labels[0]}")
    for label in "${order[@]}"; do
      start_proxy "$label"
      # shellcheck disable=SC2086
      $rest_pin "$bin/echo_bench" --addr="127.0.0.1:$proxy_port" --duration="$duration" \
        --warmup="$warmup" --json $client_args >"$bin/client.json" &
      local client=$!
      sleep "$(seconds_of "$warmup")"
      local t0 t1 status=0
      t0=$(cpu_ticks "$proxy_pid")
      wait "$client" || status=$?
      t1=$(cpu_ticks "$proxy_pid")
      stop_proxy
      local json msgs bytes p99 ok cpu_ns rate
      json=$(cat "$bin/client.json")
      msgs=$(json_field "$json" messages)
      bytes=$(json_field "$json" bytes_per_s)
      p99=$(json_field "$json" p99_us)
      ok=$(json_field "$json" ok)
      [[ "$status" == 0 && "$ok" == true ]] || echo "  ! $label round $round: client reported errors: $json" >&2
      cpu_ns=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v m="$msgs" \
        'BEGIN { printf "%.2f", (m > 0) ? t / hz * 1e9 / m : 0 }')
      rate=$(awk -v m="$msgs" -v d="$(seconds_of "$duration")" 'BEGIN { printf "%.0f", m / d }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$label" "$round" "$rate" "$bytes" \
        "$p99" "$cpu_ns" "$ok" >>"$results"
      echo "  round $round $label: $rate msg/s, p99 ${p99} us, proxy ${cpu_ns} ns CPU/msg" >&2
    done
  done
}

wants pingpong && run_workload "proxy, pingpong 512 B x 50" "--mode=pingpong --size=512 --connections=50"
wants stream && run_workload "proxy, stream 64 KiB window 16 x 20" \
  "--mode=stream --size=65536 --window=16 --connections=20"

{
  echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -r)."
  echo "Command: tools/proxy_compare.sh $*; rounds $rounds, duration $duration, warmup $warmup."
  echo "Backend tools/raw_epoll_echo (1 thread); proxy pinned alone (${proxy_pin:-unpinned}), backend and client ${rest_pin:-unpinned}."
  while IFS= read -r name; do
    table "$name" "$(labels_of "$name" | head -1)"
  done < <(names)
} >"$out/results.md"
cat "$out/results.md"
