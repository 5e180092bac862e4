#!/usr/bin/env bash
# examples/dns against NSD and Knot DNS serving the same zone (examples/dns/example.zone), under
# dnsperf, in one run: each server with one thread (pinned to CPU 0, dnsperf to CPU 1), then
# with two (unpinned; dnsperf shares the two CPUs); and examples/dns with --batch=1 (one
# recvmmsg and one sendmmsg a datagram: what recvfrom/sendto per datagram costs) beside its
# default batch of 64. Per row: queries/s and the share lost (dnsperf's count of queries not
# answered within its timeout), the server's CPU per query (utime+stime of every process and
# thread from /proc/PID/stat over dnsperf's run) and, for gev, the datagrams per recvmmsg and
# sendmmsg call from its exit line.
#
#   tools/dns_compare.sh [--rounds=3] [--duration=5] [--out=bench-out/dns]
#
# NSD's response rate limiting (on by default) is turned off: one client asks everything here.
# Installs dnsperf, nsd and knot when missing (as root). Medians of the rounds; within a round
# the servers alternate, in reverse order every other round.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 duration=5 out="bench-out/dns"
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
[[ -x /usr/sbin/nsd ]] || need+=(nsd)
[[ -x /usr/sbin/knotd ]] || need+=(knot)
if ((${#need[@]} > 0)); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "dns_compare: needs: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

work="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && pkill -s "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
tools/bazel build --config=opt //examples/dns:dns_server >&2
cp bazel-bin/examples/dns/dns_server "$work/"
cp examples/dns/example.zone "$work/"
printf '%s\n' "www.example.com A" "www.example.com AAAA" "example.com NS" "example.com SOA" \
  "nope.example.com A" "ns1.example.com A" "v6only.example.com A" "b.example.com A" \
  >"$work/queries"
mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh
clk_tck=$(getconf CLK_TCK)

# start LABEL THREADS: sets server_pid and port.
start() {
  local label="$1" threads="$2" pin="taskset -c 0"
  if ((threads > 1)); then pin="taskset -c 0,1"; fi
  port=$(free_port)
  case "$label" in
    gev*)
      local batch=64
      if [[ "$label" == *"batch 1" ]]; then batch=1; fi
      setsid $pin "$work/dns_server" --zone="$work/example.zone" --port="$port" --loops="$threads" \
        --batch="$batch" >"$work/gev.out" 2>"$work/gev.err" &
      ;;
    NSD*)
      cat >"$work/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$port
  server-count: $threads
  username: ""
  chroot: ""
  zonesdir: "$work"
  pidfile: "$work/nsd.pid"
  database: ""
  xfrdfile: "$work/xfrd.state"
  zonelistfile: "$work/zone.list"
  logfile: "$work/nsd.log"
  verbosity: 0
  hide-version: yes
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: example.com
  zonefile: "$work/example.zone"
CONF
      setsid $pin /usr/sbin/nsd -d -c "$work/nsd.conf" &
      ;;
    Knot*)
      mkdir -p "$work/knot"
      cat >"$work/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$port
    udp-workers: $threads
    tcp-workers: 1
    background-workers: 1
    rundir: "$work/knot"
log:
  - target: stderr
    any: error
database:
    storage: "$work/knot"
template:
  - id: default
    storage: "$work"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: example.com
    file: "$work/example.zone"
CONF
      setsid $pin /usr/sbin/knotd -c "$work/knot.conf" &
      ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    dig @127.0.0.1 -p "$port" +time=1 +tries=1 +short www.example.com A 2>/dev/null | grep -q 192.0.2.1 && return 0
    sleep 0.1
  done
  echo "$label did not answer" >&2
  exit 1
}

# Every server runs in a session of its own (setsid), and its CPU is that of every process
# in the session: NSD's server processes are its main process's children, and that one is
# the started process's, or init's once NSD has reloaded.
session_cpu_ticks() {
  local total=0 pid
  for pid in $(ps -o pid= -s "$1"); do
    total=$((total + $(cpu_ticks "$pid" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

stop_server() {
  kill -- "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  # What of the session is left (NSD's reloaded main and its servers).
  for _ in $(seq 50); do
    [[ -z "$(ps -o pid= -s "$server_pid")" ]] && break
    pkill -s "$server_pid" 2>/dev/null || true
    sleep 0.1
  done
  server_pid=""
}

# measure NAME LABEL ROUND THREADS: one dnsperf run; a row of results.tsv: name, label, round,
# queries/s, lost %, server CPU us per query, datagrams per recvmmsg, per sendmmsg.
measure() {
  local name="$1" label="$2" round="$3" threads="$4" client_pin="taskset -c 1"
  if ((threads > 1)); then client_pin="taskset -c 0,1"; fi
  start "$label" "$threads"
  local t0 t1 report
  t0=$(session_cpu_ticks "$server_pid")
  report=$($client_pin dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$duration" -c 4 \
    -q 200 -t 2 2>&1)
  t1=$(session_cpu_ticks "$server_pid")
  stop_server
  local completed qps lost per_receive="-" per_send="-"
  completed=$(awk '/Queries completed:/ { print $3 }' <<<"$report")
  qps=$(awk '/Queries per second:/ { print $4 }' <<<"$report")
  lost=$(sed -n 's/.*Queries lost:.*(\(.*\)%).*/\1/p' <<<"$report")
  if [[ "$label" == gev* ]]; then
    read -r per_receive per_send < <(sed -n \
      's/^udp: \([0-9]*\) queries in \([0-9]*\) recvmmsg calls, \([0-9]*\) answers in \([0-9]*\) sendmmsg.*/\1 \2 \3 \4/p' \
      "$work/gev.err" | awk '{ printf "%.1f %.1f\n", ($2 > 0) ? $1 / $2 : 0, ($4 > 0) ? $3 / $4 : 0 }') ||
      { per_receive="-" per_send="-"; }
  fi
  awk -v n="$name" -v l="$label" -v r="$round" -v q="$qps" -v lost="$lost" -v c="$completed" \
    -v t=$((t1 - t0)) -v hz="$clk_tck" -v pr="$per_receive" -v ps="$per_send" \
    'BEGIN { printf "%s\t%s\t%d\t%.0f\t%s\t%.2f\t%s\t%s\n", n, l, r, q, lost,
             (c > 0) ? t / hz * 1e6 / c : 0, pr, ps }' >>"$results"
  echo "  round $round $label: $qps q/s, lost $lost%" >&2
}

for threads in 1 2; do
  labels=("gev, batch 64" "NSD 4.6" "Knot 3.2")
  if ((threads == 1)); then labels+=("gev, batch 1"); fi
  name="1 thread"
  if ((threads > 1)); then name="$threads threads"; fi
  echo "== $name" >&2
  for ((round = 1; round <= rounds; round++)); do
    order=("${labels[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#labels[@]} - 1; i >= 0; i--)); do order+=("${labels[$i]}"); done
    fi
    for label in "${order[@]}"; do measure "$name" "$label" "$round" "$threads"; done
  done
done

{
  echo "Command: tools/dns_compare.sh $*; dnsperf -c 4 -q 200 for ${duration} s; medians of $rounds rounds;" \
    "$(/usr/sbin/nsd -v 2>&1 | head -1); $(/usr/sbin/knotd -V 2>&1 | head -1); $(dnsperf -h 2>&1 | grep -m1 -i version || true)."
  while IFS= read -r name; do
    base=$(column_median "$name" "gev, batch 64" 4)
    base_cpu=$(column_median "$name" "gev, batch 64" 6)
    echo
    echo "**$name**"
    echo
    echo "| server | queries/s | vs gev | lost % | server CPU us/query | vs gev | datagrams per recvmmsg | per sendmmsg |"
    echo "|---|---|---|---|---|---|---|---|"
    while IFS= read -r label; do
      awk -v l="$label" -v q="$(column_median "$name" "$label" 4)" -v b="$base" \
        -v lost="$(column_median "$name" "$label" 5)" -v c="$(column_median "$name" "$label" 6)" \
        -v bc="$base_cpu" -v pr="$(column_median_or_dash "$name" "$label" 7)" \
        -v ps="$(column_median_or_dash "$name" "$label" 8)" '
        BEGIN { printf "| %s | %.0f | %.2fx | %s | %.2f | %.2fx | %s | %s |\n", l, q,
                       (b > 0) ? q / b : 0, lost, c, (bc > 0) ? c / bc : 0, pr, ps }'
    done < <(labels_of "$name")
  done < <(names)
} | tee "$out/results.md"
