#!/usr/bin/env bash
# Runs chat_browser_test.py against the built chat server with Debian's python3 and chromium
# (both installed by tools/bazel).
set -euo pipefail
exec /usr/bin/python3 examples/websocket/chat_browser_test.py examples/websocket/chat_server
