#!/usr/bin/env bash
# What TLS costs on gev, and gev's TLS against nginx's, on this machine, in one run:
#
#   the cost of TLS: examples/echo (plain TCP) vs examples/tls_echo (TLS 1.3), both one loop,
#     driven by tools:echo_bench (--tls for the second): pingpong 512 B x 50 connections and
#     stream 64 KiB window 16 x 20;
#   handshakes/s: examples/http with --tls_cert vs nginx (1 worker, TLS 1.3, the same
#     certificate, tickets on), driven by tools:tls_handshake_bench (32 in flight, one GET per
#     connection): full handshakes with an RSA 2048 certificate (the server's signature is the
#     dearest step, so the server is the bottleneck) and with an EC P-256 one (the client's
#     check of the signature costs more than the server's signing: on two cores the client
#     saturates first, and the server's CPU per handshake is the figure to read), and resumed
#     ones;
#   https requests/s: the same two servers under wrk -t1 -c100 on https://.../plaintext.
#
#   tools/tls_compare.sh [--rounds=5] [--duration=5s] [--only=cost,handshakes,https]
#                        [--out=bench-out/tls]
#
# gev's servers run with one loop; the HTTPS ones with --reuseport (the loop accepts for
# itself, as nginx's one worker does; "acceptor" rows run the acceptor thread beside it).
# Servers get CPU 0 and the client the others (with two or more CPUs); within a round the
# servers alternate, in reverse order every other round. Per test a Markdown table of medians:
# rate and its ratio to the first server, the server's CPU time per message, handshake or
# request (utime+stime of all its threads from /proc/PID/stat over the client's run, which has
# no warm-up, so the count and the CPU time cover the same seconds) and its
# context switches per unit. Certificates (EC P-256, made by openssl req) are made fresh. Writes
# results.tsv and results.md to --out. Installs wrk, nginx-light and openssl when missing (as
# root).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 duration=5s only="cost,handshakes,https" out="bench-out/tls"
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

need=()
command -v wrk >/dev/null || need+=(wrk)
[[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]} > 0)); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "tls_compare: needs: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

bin="$(mktemp -d)"
server_pid=""
trap '[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$bin"' EXIT
tools/bazel build --config=opt //examples/echo:echo_server //examples/tls_echo:tls_echo_server \
  //examples/http:http_server //tools:echo_bench //tools:tls_handshake_bench >&2
cp bazel-bin/examples/echo/echo_server bazel-bin/examples/tls_echo/tls_echo_server \
  bazel-bin/examples/http/http_server bazel-bin/tools/echo_bench \
  bazel-bin/tools/tls_handshake_bench "$bin/"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$bin/key.pem" -out "$bin/cert.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$bin/rsa_key.pem" -out "$bin/rsa_cert.pem" 2>/dev/null
cert="$bin/cert.pem" key="$bin/key.pem"

mkdir -p "$out"
results="$out/results.tsv"
: >"$results"
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
  local tls=(--tls_cert="$cert" --tls_key="$key")
  case "$label" in
    "nginx, 1 worker")
      sed "s/@PORT@/$port/; s|@DIR@|$bin|g; s|@CERT@|$cert|; s|@KEY@|$key|" \
        tools/protocols/nginx_tls.conf >"$bin/nginx.conf"
      $server_pin /usr/sbin/nginx -c "$bin/nginx.conf" -p "$bin" >/dev/null 2>&1 &
      server_pid=$!
      wait_for_port "$port"
      for _ in $(seq 100); do [[ -n "$(pgrep -P "$server_pid")" ]] && break; sleep 0.02; done
      return
      ;;
    "gev http")
      $server_pin "$bin/http_server" --port="$port" --loops=1 --reuseport "${tls[@]}" \
        >/dev/null 2>&1 &
      ;;
    "gev http, acceptor")
      $server_pin "$bin/http_server" --port="$port" --loops=1 "${tls[@]}" >/dev/null 2>&1 &
      ;;
    "gev echo, plain TCP")
      $server_pin "$bin/echo_server" --port="$port" --loops=1 >/dev/null 2>&1 &
      ;;
    "gev echo, TLS 1.3")
      $server_pin "$bin/tls_echo_server" --port="$port" --loops=1 --cert="$cert" --key="$key" \
        --watch_interval=0 >/dev/null 2>&1 &
      ;;
  esac
  server_pid=$!
  wait_for_port "$port"
}
echo_client() {  # echo_bench arguments; --tls added for the TLS server
  local extra=()
  [[ "$current_label" == *TLS* ]] && extra+=(--tls)
  local json
  json=$($client_pin "$bin/echo_bench" --addr="127.0.0.1:$port" --duration="$duration" --warmup=0s \
    --json "${extra[@]}" "$@")
  [[ "$(json_field "$json" ok)" == "true" ]] || echo "  ! echo_bench reported errors: $json" >&2
  echo "$(json_field "$json" messages) $(json_field "$json" msgs_per_s)"
}

handshake_client() {  # tls_handshake_bench arguments
  local line
  line=$($client_pin "$bin/tls_handshake_bench" --addr="127.0.0.1:$port" --warmup=0s \
    --duration="$duration" --brief "$@") || echo "  ! tls_handshake_bench: errors ($line)" >&2
  read -r completed rate resumed errors <<<"$line"
  # Each slot's first handshake is a full one (no warm-up): more than those is a failure.
  if [[ "$*" == *--resume* ]] &&
     awk -v r="$resumed" -v c="$completed" 'BEGIN { exit !(c * (1 - r) > 40) }'; then
    echo "  ! only $resumed of the handshakes resumed" >&2
  fi
  echo "$completed $rate"
}

https_client() {
  local report
  report=$($client_pin wrk -t1 -c100 -d"$duration" "https://127.0.0.1:$port/plaintext")
  if grep -q "Non-2xx\|Socket errors" <<<"$report"; then
    echo "  ! wrk reported errors: $(grep 'Non-2xx\|Socket errors' <<<"$report")" >&2
  fi
  echo "$(awk '/requests in/ { print $1 }' <<<"$report") $(awk '/^Requests\/sec/ { print $2 }' <<<"$report")"
}

if wants cost; then
  echo_servers=("gev echo, plain TCP" "gev echo, TLS 1.3")
  run "echo pingpong 512 B x 50" echo_client --mode=pingpong --size=512 --connections=50 \
    -- "${echo_servers[@]}"
  run "echo stream 64 KiB window 16 x 20" echo_client --mode=stream --size=65536 --window=16 \
    --connections=20 -- "${echo_servers[@]}"
fi
https_servers=("nginx, 1 worker" "gev http" "gev http, acceptor")
if wants handshakes; then
  cert="$bin/rsa_cert.pem" key="$bin/rsa_key.pem"
  run "full TLS 1.3 handshakes, RSA 2048, 32 in flight" handshake_client --concurrency=32 \
    -- "${https_servers[@]}"
  cert="$bin/cert.pem" key="$bin/key.pem"
  run "full TLS 1.3 handshakes, EC P-256, 32 in flight" handshake_client --concurrency=32 \
    -- "${https_servers[@]}"
  run "resumed TLS 1.3 handshakes (tickets), 32 in flight" handshake_client --concurrency=32 \
    --resume -- "${https_servers[@]}"
fi
if wants https; then
  run "wrk https plaintext, 100 connections" https_client -- "${https_servers[@]}"
fi

unit_tables "tools/tls_compare.sh $*" "per second" "server CPU us each" "context switches each" | tee "$out/results.md"
