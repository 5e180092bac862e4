#!/usr/bin/env bash
# Runs tls_echo_test.py against the built TLS echo server and proxy (see the script).
set -euo pipefail
exec python3 examples/tls_echo/tls_echo_test.py examples/tls_echo/tls_echo_server \
  examples/proxy/proxy
