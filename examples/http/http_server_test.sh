#!/usr/bin/env bash
# Runs http_server_test.py against the built example (see the script for what it checks).
set -euo pipefail
exec python3 examples/http/http_server_test.py examples/http/http_server
