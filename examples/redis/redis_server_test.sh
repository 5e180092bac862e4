#!/usr/bin/env bash
# Runs redis_server_test.py against the built example (see the script for what it checks).
set -euo pipefail
exec python3 examples/redis/redis_server_test.py examples/redis/redis_server
