#!/usr/bin/env bash
# Runs websocket_clients_test.py against the built echo server with Debian's python3 (whose
# python3-websockets and python3-wsproto tools/bazel installs), not another python3 on PATH.
set -euo pipefail
exec /usr/bin/python3 examples/websocket/websocket_clients_test.py examples/websocket/echo_server
