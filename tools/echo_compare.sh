#!/usr/bin/env bash
# Compares gev's echo server with the baseline (tools/raw_epoll_echo) and with echo servers on
# the libraries a C++ user would pick instead (tools/peers: libuv, libevent, Boost.Asio, Go's
# net), on this machine, in one run.
#
#   tools/echo_compare.sh [--rounds=5] [--duration=5s] [--warmup=1s] [--out=bench-out] [--quick]
#                         [--only=pingpong1,pingpong4k,stream1,stream512,flood1,loops,sweep,memory]
#                         [--peers=all|none|uv,event,asio,go] [--loops=2]
#                         [--server-cpus=0-3 --client-cpus=4-7]
#                         [--bazel-config=NAME]   (gev built with that .bazelrc config too)
#                         [--render=OLD_OUT/results.tsv]  (tables and charts from an earlier run's
#                                                         rows, besides what --only runs now)
#                         [--gev-before=PATH]  (another build of examples/echo:echo_server, say
#                                              main's before a change, run beside this one, and
#                                              this build with --gather_writes=false)
#
# Builds gev and the baseline with --config=opt and the peers with tools/peers/build.sh (which
# installs their Debian packages when missing). Pins server and client to different CPUs: by
# default one-loop servers get CPU 0 and the client the rest, and --loops servers get the first
# --loops CPUs where the machine has one more; --server-cpus/--client-cpus set both for every
# configuration (for a bigger machine). Alternates the servers within every round (and reverses
# the order every other round) so drift hits all alike. For each configuration it prints a
# Markdown table of medians over the rounds, with ratios to the baseline and to the fastest, and
# the server's CPU time per message (utime+stime from /proc/PID/stat over the timed window).
# Writes results.tsv, results.md and chart PNGs (gnuplot, installed from Debian when run as
# root) to --out.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 duration=5s warmup=1s out=bench-out
only="pingpong1,pingpong4k,stream1,stream512,flood1,loops,sweep,memory"
peers=all loops=2 server_cpus="" client_cpus="" render="" gev_before=""
bazel_configs=()
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --only=*) only="${arg#*=}" ;;
    --quick) rounds=3 duration=2s ;;
    --bazel-config=*) bazel_configs+=("--config=${arg#*=}") ;;
    --peers=*) peers="${arg#*=}" ;;
    --loops=*) loops="${arg#*=}" ;;
    --server-cpus=*) server_cpus="${arg#*=}" ;;
    --client-cpus=*) client_cpus="${arg#*=}" ;;
    --render=*) render="${arg#*=}" ;;
    --gev-before=*) gev_before="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
only="${only//loops2/loops}"  # The old name of the multi-loop configuration.
wants() { [[ ",$only," == *",$1,"* ]]; }
[[ "$peers" =~ ^(all|none|(uv|event|asio|go)(,(uv|event|asio|go))*)$ ]] ||
  { echo "--peers must be all, none or a list of uv,event,asio,go" >&2; exit 2; }
if [[ -n "$server_cpus" && -z "$client_cpus" ]] || [[ -z "$server_cpus" && -n "$client_cpus" ]]; then
  echo "--server-cpus and --client-cpus go together" >&2
  exit 2
fi

if ! command -v gnuplot >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >&2 || true
  fi
  command -v gnuplot >/dev/null 2>&1 ||
    echo "echo_compare: no gnuplot (sudo apt-get install gnuplot-nox): tables only" >&2
fi

tools/bazel build --config=opt "${bazel_configs[@]}" //tools:echo_bench //tools:raw_epoll_echo \
  //tools:idle_memory //examples/echo:echo_server >&2
bin="$(mktemp -d)"
trap 'rm -rf "$bin"; [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true' EXIT
for f in tools/echo_bench tools/raw_epoll_echo tools/idle_memory examples/echo/echo_server; do
  cp "bazel-bin/$f" "$bin/"
done
if [[ "$peers" != none ]]; then
  tools/peers/build.sh "$bin" >&2
fi
if [[ -n "$gev_before" ]]; then
  cp "$gev_before" "$bin/echo_server_before"
fi
# LABEL=COMMAND entries of the --gev-before build with N loops (and ARGS), or none.
before_with() {  # $1 = loops, $2 = label suffix, $3... = extra arguments
  [[ -n "$gev_before" ]] || return 0
  local n="$1" suffix="$2"
  shift 2
  echo "gev before $suffix=echo_server_before --port=0 --loops=$n $*"
}
# LABEL=COMMAND entries of the peers with N threads (none with --peers=none).
peers_with() {  # $1 = threads
  [[ "$peers" == none ]] && return 0
  local t="$1" unit="thread"
  ((t > 1)) && unit="threads"
  wants_peer uv && echo "libuv $t $unit=uv_echo --port=0 --threads=$t"
  wants_peer event && echo "libevent $t $unit=event_echo --port=0 --threads=$t"
  wants_peer asio && echo "Boost.Asio $t $unit=asio_echo --port=0 --threads=$t"
  wants_peer go && echo "Go net, GOMAXPROCS $t=go_echo --port=0 --threads=$t"
  return 0
}
wants_peer() { [[ "$peers" == all || ",$peers," == *",$1,"* ]]; }
mkdir -p "$out"
results="$out/results.tsv"
if [[ -z "$render" ]]; then
  : >"$results"
elif [[ ! "$render" -ef "$results" ]]; then
  cp "$render" "$results"
fi

# shellcheck source=tools/bench_lib.sh
source tools/bench_lib.sh

cpus=$(nproc)
clk_tck=$(getconf CLK_TCK)
# taskset prefixes: server CPUs, client CPUs (empty when the machine has too few).
pin_for() {  # $1 = server threads
  if [[ -n "$server_cpus" ]]; then
    server_pin="taskset -c $server_cpus"
    client_pin="taskset -c $client_cpus"
  elif ((cpus >= $1 + 1)); then
    server_pin="taskset -c 0-$(($1 - 1))"
    client_pin="taskset -c $1-$((cpus - 1))"
  else
    server_pin="" client_pin=""
  fi
}

start_server() {  # $@ = command; sets server_pid, port
  local log="$bin/server.out"
  : >"$log"
  $server_pin "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$log" && break
    sleep 0.05
  done
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log" | head -1)
  [[ -n "$port" ]] || { echo "server did not start: $*" >&2; cat "$log" >&2; exit 1; }
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# run_config NAME SERVER_THREADS "CLIENT ARGS" LABEL=COMMAND...
run_config() {
  local name="$1" threads="$2" client_args="$3"
  shift 3
  local servers=("$@")
  pin_for "$threads"
  echo "== $name (${#servers[@]} servers x $rounds rounds)" >&2
  for ((round = 1; round <= rounds; round++)); do
    local order=("${servers[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[$i]}"); done
    fi
    for entry in "${order[@]}"; do
      local label="${entry%%=*}" command="${entry#*=}"
      # shellcheck disable=SC2086
      start_server $bin/$command
      # shellcheck disable=SC2086
      $client_pin "$bin/echo_bench" --addr="127.0.0.1:$port" --duration="$duration" \
        --warmup="$warmup" --json $client_args >"$bin/client.json" &
      local client=$!
      sleep "$(seconds_of "$warmup")"
      local t0
      t0=$(cpu_ticks "$server_pid" || echo 0)
      local status=0
      wait "$client" || status=$?
      local t1
      t1=$(cpu_ticks "$server_pid" || { echo "  ! $label round $round: the server exited" >&2; echo 0; })
      stop_server
      local json
      json=$(cat "$bin/client.json")
      local msgs bytes p99 ok
      msgs=$(json_field "$json" messages)
      bytes=$(json_field "$json" bytes_per_s)
      p99=$(json_field "$json" p99_us)
      ok=$(json_field "$json" ok)
      [[ "$status" == 0 && "$ok" == true ]] || echo "  ! $label round $round: client reported errors: $json" >&2
      local cpu_ns
      cpu_ns=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v m="$msgs" \
        'BEGIN { printf "%.2f", (m > 0) ? t / hz * 1e9 / m : 0 }')
      local rate
      rate=$(awk -v m="$msgs" -v d="$(seconds_of "$duration")" 'BEGIN { printf "%.0f", m / d }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$label" "$round" "$rate" "$bytes" \
        "$p99" "$cpu_ns" "$ok" >>"$results"
      echo "  round $round $label: $rate msg/s, p99 ${p99} us, server ${cpu_ns} ns CPU/msg" >&2
    done
  done
}

pingpong="--mode=pingpong --size=512 --connections=50"
one_loop=("raw_epoll_echo 1 thread=raw_epoll_echo --port=0 --threads=1"
  "gev 1 loop=echo_server --port=0 --loops=1")
mapfile -t -O "${#one_loop[@]}" one_loop < <(before_with 1 "1 loop")
if [[ -n "$gev_before" ]]; then
  one_loop+=("gev 1 loop, not gathered=echo_server --port=0 --loops=1 --gather_writes=false")
fi
mapfile -t -O "${#one_loop[@]}" one_loop < <(peers_with 1)
wants pingpong1 && run_config "1 loop, pingpong 512 B x 50" 1 "$pingpong" "${one_loop[@]}"
wants pingpong4k && run_config "1 loop, pingpong 4 KiB x 1000" 1 \
  "--mode=pingpong --size=4096 --connections=1000" "${one_loop[@]}"
wants stream1 && run_config "1 loop, stream 64 KiB window 16 x 20" 1 \
  "--mode=stream --size=65536 --window=16 --connections=20" "${one_loop[@]}"
wants stream512 && run_config "1 loop, stream 512 B window 16 x 4" 1 \
  "--mode=stream --size=512 --window=16 --connections=4" "${one_loop[@]}"
wants flood1 && run_config "1 loop, flood 6 B x 50" 1 "--mode=flood --connections=50" "${one_loop[@]}"
if wants loops; then
  many=("raw_epoll_echo $loops threads=raw_epoll_echo --port=0 --threads=$loops"
    "gev $loops loops acceptor=echo_server --port=0 --loops=$loops"
    "gev $loops loops reuseport=echo_server --port=0 --loops=$loops --reuseport")
  mapfile -t -O "${#many[@]}" many < <(before_with "$loops" "$loops loops acceptor")
  mapfile -t -O "${#many[@]}" many < <(peers_with "$loops")
  run_config "$loops loops, pingpong 512 B x 50" "$loops" "$pingpong --threads=$loops" "${many[@]}"
fi
sweep=(10 100 1000 5000)
if wants sweep; then
  for n in "${sweep[@]}"; do
    run_config "sweep, pingpong 4096 B x $n" 1 "--mode=pingpong --size=4096 --connections=$n" \
      "raw_epoll_echo 1 thread=raw_epoll_echo --port=0 --threads=1" \
      "gev 1 loop=echo_server --port=0 --loops=1"
  done
fi

{
  echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -r)."
  echo "Command: tools/echo_compare.sh $*; rounds $rounds, duration $duration, warmup $warmup."
  if [[ -n "$(taskset -c 0 true 2>/dev/null && echo yes)" && "$cpus" -ge 2 ]]; then
    if [[ -n "$server_cpus" ]]; then
      echo "Servers pinned to CPUs $server_cpus and the client to CPUs $client_cpus."
    else
      echo "One-thread servers pinned to CPU 0 and the client to the others; $loops-thread servers pinned only where $cpus CPUs allow."
    fi
  fi
  while IFS= read -r name; do
    table "$name" "$(labels_of "$name" | head -1)"
  done < <(names)
} >"$out/results.md"

if wants memory; then
  {
    echo
    echo "**Idle memory** (tools/idle_memory: 10,000 connections, one 6-byte echo each; server RSS growth / connections)"
    echo
    echo "| server | bytes per connection |"
    echo "|---|---|"
    memory_servers=("${one_loop[@]}"
      "gev 2 loops acceptor=echo_server --port=0 --loops=2"
      "gev 2 loops reuseport=echo_server --port=0 --loops=2 --reuseport")
    for entry in "${memory_servers[@]}"; do
      server_pin=""
      # shellcheck disable=SC2086
      start_server $bin/${entry#*=}
      bytes=$("$bin/idle_memory" --addr="127.0.0.1:$port" --pid="$server_pid" \
        --connections=10000 --json | sed -n 's/.*"bytes_per_connection":\([0-9.]*\).*/\1/p')
      stop_server
      echo "| ${entry%%=*} | $bytes |"
    done
  } >>"$out/results.md"
fi

if command -v gnuplot >/dev/null 2>&1; then
  # Bar chart of every configuration's throughput ratio to the baseline.
  ratios="$bin/ratios.dat"
  : >"$ratios"
  while IFS= read -r name; do
    base=$(labels_of "$name" | head -1)
    br=$(awk -F'\t' -v n="$name" -v l="$base" '$1 == n && $2 == l { print $5 }' "$results" | median)
    while IFS= read -r label; do
      [[ "$label" == "$base" ]] && continue
      r=$(awk -F'\t' -v n="$name" -v l="$label" '$1 == n && $2 == l { print $5 }' "$results" | median)
      awk -v n="$name / $label" -v r="$r" -v b="$br" 'BEGIN { printf "\"%s\" %.3f\n", n, (b > 0) ? r / b : 0 }' >>"$ratios"
    done < <(labels_of "$name")
  done < <(names)
  gnuplot <<EOF
set terminal png size 1100,560 noenhanced
set output "$out/ratios.png"
set title "echo throughput relative to raw_epoll_echo (1.0 = baseline; medians of $rounds rounds)"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set offsets 0.5, 0.5, 0, 0
set grid ytics
set xtics rotate by -25 font ",8"
set rmargin 14
set bmargin 9
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2
plot "$ratios" using 0:2:xtic(1) with boxes notitle
EOF
  if wants sweep; then
    sweepdat="$bin/sweep.dat"
    : >"$sweepdat"
    for n in "${sweep[@]}"; do
      name="sweep, pingpong 4096 B x $n"
      raw=$(awk -F'\t' -v n="$name" '$1 == n && $2 ~ /^raw/ { print $4 }' "$results" | median)
      gev=$(awk -F'\t' -v n="$name" '$1 == n && $2 ~ /^gev/ { print $4 }' "$results" | median)
      echo "$n $raw $gev" >>"$sweepdat"
    done
    gnuplot <<EOF
set terminal png size 900,520 noenhanced
set output "$out/sweep.png"
set title "Echo pingpong, 4096-byte messages, 1 loop: messages/s by connections"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.6
set grid ytics
set yrange [0:*]
set xlabel "connections"
plot "$sweepdat" using 2:xtic(1) title "raw_epoll_echo", "" using 3 title "gev"
EOF
  fi
  # One chart per configuration: every server's messages/s (medians), labelled with its ratio to
  # the fastest.
  while IFS= read -r name; do
    slug=$(tr 'A-Z' 'a-z' <<<"$name" | sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')
    dat="$bin/$slug.dat"
    : >"$dat"
    best=0
    while IFS= read -r label; do
      r=$(column_median "$name" "$label" 4)
      best=$(awk -v a="$best" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
      printf '"%s"\t%s\n' "$label" "$r" >>"$dat"
    done < <(labels_of "$name")
    awk -F'\t' -v best="$best" '{ printf "%s\t%s\t%.2fx\n", $1, $2, (best > 0) ? $2 / best : 0 }' "$dat" >"$dat.r"
    gnuplot <<EOF
set terminal png size 900,460 noenhanced
set output "$out/chart-$slug.png"
set datafile separator "\t"
set title "$name: messages/s (medians of $rounds rounds; label: ratio to the fastest)"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:*]
set offsets 0.5, 0.5, graph 0.12, 0
set grid ytics
set format y "%.0s%c"
set xtics rotate by -20 font ",9"
set bmargin 6
plot "$dat.r" using 0:2:xtic(1) with boxes notitle, \
     "" using 0:2:3 with labels offset 0,0.8 notitle
EOF
  done < <(names)
fi
cat "$out/results.md"
