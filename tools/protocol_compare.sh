#!/usr/bin/env bash
# Compares the protocol examples with the servers people run, driven by real clients nobody
# here wrote, on this machine, in one run:
#
#   examples/redis vs redis-server (--save "" --appendonly no), with redis-benchmark
#     -t set / -t get, -n 200000 -c 50, at -P 1 and -P 16;
#   examples/http vs nginx (1 worker, keepalive_requests raised so both keep connections),
#     with wrk -t1 -c100 on /plaintext, without pipelining and with 16 requests pipelined.
#
#   tools/protocol_compare.sh [--rounds=5] [--only=redis,http] [--out=bench-out/protocols]
#                             [--requests=200000] [--duration=5s]
#                             [--render=OLD_OUT/results.tsv]  (tables and chart of an earlier
#                                                             run's rows; nothing is run)
#
# Each gev example runs twice: as built (writes gathered per loop iteration) and with
# --gather_writes=false (each reply written at once, as before gathering), so the effect of
# gathering is measured in the same run. Servers get CPU 0 and the client the others (when the
# machine has two or more); within a round the servers alternate, in reverse order every other
# round. For each test it prints a Markdown table of medians over the rounds: requests/s and
# the ratio to the reference server, the server's CPU time per request (utime+stime of all its
# threads from /proc/PID/stat over the client's run) and its context switches per request
# (voluntary and involuntary, from /proc/PID/task/*/status). Writes results.tsv and results.md
# to --out, and chart.png (requests/s against the reference, per test; gnuplot). Installs redis-server, redis-tools, wrk and nginx-light when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 only="redis,http" out="bench-out/protocols" requests=200000 duration=5s render=""
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --only=*) only="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --requests=*) requests="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --render=*) render="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }

if [[ -n "$render" ]]; then only=""; fi
need=()
[[ -n "$render" ]] || command -v redis-server >/dev/null || need+=(redis-server)
[[ -n "$render" ]] || command -v redis-benchmark >/dev/null || need+=(redis-tools)
[[ -n "$render" ]] || command -v wrk >/dev/null || need+=(wrk)
[[ -n "$render" || -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
if ((${#need[@]} > 0)); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "protocol_compare: needs: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

bin="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$bin"' EXIT
if [[ -z "$render" ]]; then
  tools/bazel build --config=opt //examples/redis:redis_server //examples/http:http_server >&2
  cp bazel-bin/examples/redis/redis_server bazel-bin/examples/http/http_server "$bin/"
  cp tools/protocols/pipeline.lua "$bin/"
fi

mkdir -p "$out"
results="$out/results.tsv"
if [[ -z "$render" ]]; then
  : >"$results"
elif [[ ! "$render" -ef "$results" ]]; then
  cp "$render" "$results"
fi
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh
clk_tck=$(getconf CLK_TCK)
if (($(nproc) >= 2)); then
  server_pin="taskset -c 0" client_pin="taskset -c 1-$(($(nproc) - 1))"
  server_cpus=0 client_cpus="1-$(($(nproc) - 1))"
else
  server_pin="" client_pin=""
  server_cpus="" client_cpus=""
fi

# start LABEL: starts that server on a free port; sets server_pid and port.
start() {
  local label="$1"
  port=$(free_port)
  case "$label" in
    "redis-server")
      $server_pin redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$bin" >/dev/null 2>&1 &
      ;;
    "nginx, 1 worker")
      sed "s/@PORT@/$port/; s|@DIR@|$bin|g" tools/protocols/nginx.conf >"$bin/nginx.conf"
      $server_pin /usr/sbin/nginx -c "$bin/nginx.conf" -p "$bin" >/dev/null 2>&1 &
      server_pid=$!
      wait_for_port "$port"
      # The worker does the serving; wait until the master has forked it.
      for _ in $(seq 100); do [[ -n "$(pgrep -P "$server_pid")" ]] && break; sleep 0.02; done
      return
      ;;
    "gev redis") $server_pin "$bin/redis_server" --port="$port" --loops=1 >/dev/null 2>&1 & ;;
    "gev redis, not gathered")
      $server_pin "$bin/redis_server" --port="$port" --loops=1 --gather_writes=false \
        >/dev/null 2>&1 &
      ;;
    "gev http") $server_pin "$bin/http_server" --port="$port" --loops=1 >/dev/null 2>&1 & ;;
    "gev http, not gathered")
      $server_pin "$bin/http_server" --port="$port" --loops=1 --gather_writes=false \
        >/dev/null 2>&1 &
      ;;
  esac
  server_pid=$!
  wait_for_port "$port"
}
redis_client() {  # $1 = test (set/get), $2 = pipeline
  local csv
  csv=$($client_pin redis-benchmark -p "$port" -t "$1" -n "$requests" -c 50 -P "$2" -q --csv)
  # "test","rps",...: the second field of the data line.
  echo "$requests $(awk -F'"' 'NR == 2 { print $4 }' <<<"$csv")"
}

http_client() {  # $1 = pipeline depth (1: none)
  local args=(-t1 -c100 -d"$duration" --latency)
  ((${1} > 1)) && args+=(-s "$bin/pipeline.lua")
  local report
  report=$($client_pin wrk "${args[@]}" "http://127.0.0.1:$port/plaintext" -- "$1")
  local total rate
  total=$(awk '/requests in/ { print $1 }' <<<"$report")
  rate=$(awk '/^Requests\/sec/ { print $2 }' <<<"$report")
  if grep -q "Non-2xx\|Socket errors" <<<"$report"; then
    echo "  ! wrk reported errors: $(grep 'Non-2xx\|Socket errors' <<<"$report")" >&2
  fi
  echo "$total $rate"
}

if wants redis; then
  redis_servers=("redis-server" "gev redis" "gev redis, not gathered")
  for p in 1 16; do
    run "redis-benchmark SET, -P $p, 50 clients" redis_client set "$p" -- "${redis_servers[@]}"
    run "redis-benchmark GET, -P $p, 50 clients" redis_client get "$p" -- "${redis_servers[@]}"
  done
fi
if wants http; then
  http_servers=("nginx, 1 worker" "gev http" "gev http, not gathered")
  run "wrk plaintext, 100 connections" http_client 1 -- "${http_servers[@]}"
  run "wrk plaintext, 100 connections, 16 pipelined" http_client 16 -- "${http_servers[@]}"
fi

unit_tables "tools/protocol_compare.sh $*" "requests/s" "server CPU us/request" \
  "context switches/request" | tee "$out/results.md"

# One bar per server and test: its requests/s over the reference's (the first server).
if command -v gnuplot >/dev/null; then
  chart_data="$bin/chart.dat"
  {
    printf 'test'
    while IFS= read -r name; do :; done < <(names)
    first=$(names | head -1)
    mapfile -t labels < <(labels_of "$first")
    printf '\t"%s"' "${labels[@]:1}"
    printf '\n'
    while IFS= read -r name; do
      mapfile -t labels < <(labels_of "$name")
      base_rate=$(column_median "$name" "${labels[0]}" 4)
      short=$(sed 's/redis-benchmark //; s/, 50 clients//; s/wrk plaintext, 100 connections/HTTP/; s/, 16 pipelined/, -P 16/' <<<"$name")
      printf '"%s"' "$short"
      for label in "${labels[@]:1}"; do
        awk -v r="$(column_median "$name" "$label" 4)" -v b="$base_rate" 'BEGIN { printf "\t%.3f", (b > 0) ? r / b : 0 }'
      done
      printf '\n'
    done < <(names)
  } >"$chart_data"
  gnuplot <<GNUPLOT
set terminal pngcairo size 1000,420 font ",10"
set output "$out/chart.png"
set title "gev's examples against redis-server and nginx (1 worker): requests/s over theirs, medians of $rounds rounds"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set yrange [0:*]
set ylabel "x the reference server"
set xtics rotate by -20 scale 0
set key top left
set grid ytics
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
plot "$chart_data" using 2:xtic(1) title "gev (replies gathered)", '' using 3 title "gev, each reply written at once"
GNUPLOT
fi
