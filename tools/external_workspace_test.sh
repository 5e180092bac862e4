#!/usr/bin/env bash
# Builds a tiny workspace outside this one from exactly the README's "Depending on one target"
# snippets (WORKSPACE, .bazelrc, BUILD.bazel, my_server.cc, each the fenced block after its
# <!-- snippet: NAME --> marker; only /path/to/gev is replaced by this checkout's path), runs
# the server it makes and checks that it echoes; builds and runs a program on @gev//tls there
# too; then builds the server again below C++17 and checks that our headers stop the build with
# their #error. Prints "ok: ..." or "FAIL: ..." per check.
#
#   tools/external_workspace_test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
workspace="$(mktemp -d /tmp/gev-external.XXXXXX)"
bazel=("$root/tools/bazel" "--output_base=$workspace/.output_base")
cleanup() {
  [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null
  (cd "$workspace" && "${bazel[@]}" shutdown >/dev/null 2>&1)
  rm -rf "$workspace"
}
trap cleanup EXIT
failures=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

snippet() {  # $1 = name: the fenced block after "<!-- snippet: $1 -->" in README.md
  awk -v marker="<!-- snippet: $1 -->" '
    $0 == marker { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    found && inside { print }' README.md
}
for name in WORKSPACE .bazelrc BUILD.bazel my_server.cc; do
  snippet "$name" | sed "s|/path/to/gev|$root|" >"$workspace/$name"
  if [[ ! -s "$workspace/$name" ]]; then
    fail "README.md has no '<!-- snippet: $name -->' block"
  fi
done
((failures == 0)) || exit 1

cd "$workspace"
if "${bazel[@]}" build //:my_server >build.log 2>&1; then
  ok "a fresh workspace builds @gev//server from the README's snippets"
else
  tail -30 build.log
  fail "the README's snippets do not build in a fresh workspace"
  exit 1
fi

port_log="$workspace/server.out"
bazel-bin/my_server 127.0.0.1:0 >"$port_log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$port_log" && break; sleep 0.05; done
port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$port_log" | head -1)
if [[ -n "$port" ]] && python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"hello from the README")
got = b""
while len(got) < 21:
    chunk = s.recv(100)
    if not chunk:
        break
    got += chunk
sys.exit(0 if got == b"hello from the README" else 1)
PY
then
  ok "the README's my_server echoes"
else
  cat "$port_log"
  fail "the README's my_server does not echo"
fi
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=""

# @gev//tls from the same WORKSPACE: gev_dependencies() declares @openssl (Debian's libssl-dev).
mkdir -p tls_user
cat >tls_user/BUILD.bazel <<'BUILD'
cc_binary(
    name = "tls_user",
    srcs = ["tls_user.cc"],
    deps = ["@gev//tls"],
)
BUILD
cat >tls_user/tls_user.cc <<'CC'
// A TLS client context over the system's CAs: what depending on @gev//tls gives.
#include <cstdio>

#include "tls/tls.h"

int main() {
  auto context = gev::tls::ClientContext::Create({});
  if (!context.ok()) {
    std::fprintf(stderr, "%s\n", context.status().ToString().c_str());
    return 1;
  }
  return 0;
}
CC
if "${bazel[@]}" build //tls_user >tls.log 2>&1 && bazel-bin/tls_user/tls_user; then
  ok "the same workspace builds and runs a program on @gev//tls"
else
  tail -30 tls.log
  fail "@gev//tls does not build or run from the README's WORKSPACE"
fi

# @gev//websocket from the same WORKSPACE: gev_dependencies() declares @zlib too.
mkdir -p websocket_user
cat >websocket_user/BUILD.bazel <<'BUILD'
cc_binary(
    name = "websocket_user",
    srcs = ["websocket_user.cc"],
    deps = ["@gev//websocket"],
)
BUILD
cat >websocket_user/websocket_user.cc <<'CC'
// A WebSocket service made and its accept value checked: what depending on @gev//websocket gives.
#include <cstdio>

#include "websocket/websocket.h"

class Quiet : public gev::websocket::Handler {
  void OnMessage(gev::websocket::Socket&, std::string_view, gev::websocket::MessageType) override {}
};

int main() {
  Quiet quiet;
  gev::websocket::Service service(&quiet, {});
  return gev::websocket::AcceptKey("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
             ? 0 : 1;
}
CC
if "${bazel[@]}" build //websocket_user >websocket.log 2>&1 && bazel-bin/websocket_user/websocket_user; then
  ok "the same workspace builds and runs a program on @gev//websocket"
else
  tail -30 websocket.log
  fail "@gev//websocket does not build or run from the README's WORKSPACE"
fi

if "${bazel[@]}" build --cxxopt=-std=c++14 //:my_server >old.log 2>&1; then
  fail "a build below C++17 succeeded; the headers' #error should have stopped it"
elif grep -q "gev needs C++17" old.log; then
  ok "below C++17 the build stops with our headers' #error"
else
  tail -20 old.log
  fail "a build below C++17 failed without our #error"
fi
exit $((failures > 0))
