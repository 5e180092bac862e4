#!/usr/bin/env bash
# User-space instructions per echoed message of gev's echo server (one loop), counted by
# valgrind's callgrind: the library's own cost, without the kernel's, and repeatable on a
# machine whose speed drifts (a 2-vCPU VM's msgs/s and CPU times move by tens of percent
# between rounds; instruction counts move by well under 1%). With --gev-before=PATH it counts
# another build of examples/echo:echo_server too (main's, say), first and alternating, and
# prints this build's ratio to it.
#
#   tools/echo_instructions.sh [--gev-before=PATH] [--rounds=2] [--duration=8s]
#                              [--only=pingpong512,stream64k,pingpong4k]
#
# The server runs under callgrind (about 50x slower), so the load generator is far from its
# limit and each workload's batches are alike for every build. Installs valgrind from Debian
# when missing (as root). Prints one Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=2 duration=8s gev_before="" only="pingpong512,stream64k,pingpong4k"
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --duration=*) duration="${arg#*=}" ;;
    --gev-before=*) gev_before="${arg#*=}" ;;
    --only=*) only="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }

if ! command -v valgrind >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >&2
  else
    echo "echo_instructions: valgrind is needed (sudo apt-get install valgrind)" >&2
    exit 1
  fi
fi

tools/bazel build --config=opt //tools:echo_bench //examples/echo:echo_server >&2
bin="$(mktemp -d)"
server_pid=""
trap 'rm -rf "$bin"; [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true' EXIT
cp bazel-bin/tools/echo_bench bazel-bin/examples/echo/echo_server "$bin/"
builds=()
if [[ -n "$gev_before" ]]; then
  cp "$gev_before" "$bin/echo_server_before"
  builds+=("gev before=$bin/echo_server_before")
fi
builds+=("gev=$bin/echo_server")

# Instructions per message of one build under one load: prints "<messages> <instructions>".
count() {  # $1 = server binary, $2... = echo_bench arguments
  local server="$1"
  shift
  local out="$bin/callgrind.out" log="$bin/server.log"
  rm -f "$out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$server" --port=0 --loops=1 \
    >"$log" 2>&1 &
  server_pid=$!
  local port=""
  for _ in $(seq 300); do
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$log" | head -1)
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "server did not start: $server" >&2; cat "$log" >&2; exit 1; }
  local json
  json=$("$bin/echo_bench" --addr="127.0.0.1:$port" --warmup=0s --duration="$duration" --json "$@")
  kill -INT "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  [[ "$json" == *'"ok":true'* ]] || { echo "the client reported errors: $json" >&2; exit 1; }
  local messages instructions
  messages=$(sed -n 's/.*"messages":\([0-9]*\).*/\1/p' <<<"$json")
  instructions=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
  echo "$messages $instructions"
}

workloads=()
wants pingpong512 && workloads+=("pingpong 512 B x 50=--mode=pingpong --size=512 --connections=50")
wants stream64k && workloads+=("stream 64 KiB window 16 x 20=--mode=stream --size=65536 --window=16 --connections=20")
wants pingpong4k && workloads+=("pingpong 4 KiB x 1000=--mode=pingpong --size=4096 --connections=1000")

echo "| workload | build | instructions per message, each round | median | vs the first build |"
echo "|---|---|---|---|---|"
for workload in "${workloads[@]}"; do
  name="${workload%%=*}"
  # shellcheck disable=SC2206  # One word per argument.
  load=(${workload#*=})
  declare -A per_round=()
  for ((round = 1; round <= rounds; round++)); do
    order=("${builds[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#builds[@]} - 1; i >= 0; i--)); do order+=("${builds[$i]}"); done
    fi
    for build in "${order[@]}"; do
      label="${build%%=*}"
      read -r messages instructions < <(count "${build#*=}" "${load[@]}")
      value=$(awk -v i="$instructions" -v m="$messages" 'BEGIN { printf "%.0f", (m > 0) ? i / m : 0 }')
      echo "  $name, $label, round $round: $messages messages, $value instructions each" >&2
      per_round[$label]="${per_round[$label]:-} $value"
    done
  done
  first_median=""
  for build in "${builds[@]}"; do
    label="${build%%=*}"
    # shellcheck disable=SC2086  # One value per word.
    median=$(printf '%s\n' ${per_round[$label]} | sort -g |
      awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    [[ -z "$first_median" ]] && first_median="$median"
    ratio=$(awk -v a="$median" -v b="$first_median" 'BEGIN { printf "%.3fx", (b > 0) ? a / b : 0 }')
    echo "| $name | $label |${per_round[$label]} | $median | $ratio |"
  done
  unset per_round
done
