#!/usr/bin/env bash
# Builds the peer echo servers that tools/echo_compare.sh measures gev against, from Debian's
# packages: uv_echo (libuv1-dev), event_echo (libevent-dev), asio_echo (libboost-dev) and go_echo
# (golang-go, standard library only); and the WebSocket servers that tools/ws_compare.sh measures
# gev's against: beast_ws (Boost.Beast, libboost-dev), lws_ws (libwebsockets-dev) and gorilla_ws
# (golang-github-gorilla-websocket-dev, from Debian's Go source tree). As root it installs what
# is missing with apt-get; otherwise it prints the apt-get line and stops. The peers are not
# Bazel targets so that building the library never needs these packages.
#
#   tools/peers/build.sh OUT_DIR      # writes OUT_DIR/{uv_echo,event_echo,asio_echo,go_echo,
#                                     #   beast_ws,lws_ws,gorilla_ws}
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: tools/peers/build.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

packages=(g++ pkg-config libuv1-dev libevent-dev libboost-dev golang-go libwebsockets-dev
  golang-github-gorilla-websocket-dev)
missing=()
for package in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$package")
  fi
done
if ((${#missing[@]})); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "tools/peers/build.sh: missing ${missing[*]}; install with" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "tools/peers/build.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
fi

# The same optimization as gev's --config=opt build (-O2, NDEBUG), warnings as errors.
flags=(-O2 -DNDEBUG -Wall -Wextra -Werror)
# shellcheck disable=SC2046
gcc -std=gnu11 "${flags[@]}" $(pkg-config --cflags libuv) "$here/uv_echo.c" -o "$out/uv_echo" \
  $(pkg-config --libs libuv)
# shellcheck disable=SC2046
g++ -std=c++17 "${flags[@]}" $(pkg-config --cflags libevent) "$here/event_echo.cc" \
  -o "$out/event_echo" $(pkg-config --libs libevent) -pthread
g++ -std=c++17 "${flags[@]}" "$here/asio_echo.cc" -o "$out/asio_echo" -pthread
g++ -std=c++17 "${flags[@]}" "$here/beast_ws.cc" -o "$out/beast_ws" -pthread
# shellcheck disable=SC2046
gcc -std=gnu11 "${flags[@]}" $(pkg-config --cflags libwebsockets) "$here/lws_ws.c" \
  -o "$out/lws_ws" $(pkg-config --libs libwebsockets)
# Go's caches under OUT_DIR: nothing is written to $HOME, nothing is fetched. gorilla/websocket
# comes from Debian's Go source tree (/usr/share/gocode), found through GOPATH.
GOCACHE="$out/.gocache" GOPATH="$out/.gopath" GO111MODULE=off GOPROXY=off \
  go build -o "$out/go_echo" "$here/go_echo.go"
GOCACHE="$out/.gocache" GOPATH="$out/.gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off \
  go build -o "$out/gorilla_ws" "$here/gorilla_ws.go"
echo "built: $(cd "$out" && ls uv_echo event_echo asio_echo go_echo beast_ws lws_ws gorilla_ws |
  tr '\n' ' ')" >&2
