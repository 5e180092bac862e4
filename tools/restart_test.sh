#!/usr/bin/env bash
# Restarts under load (tools/restart_test.py): examples/echo and examples/http, one acceptor and
# SO_REUSEPORT on 2 loops, restarted 10 times by handing their listeners over while clients
# connect without a pause; then socket activation of both through systemd-socket-activate,
# restarted the same way. Fails on any failed connect, reset, lost or wrong byte, an old
# process that does not drain cleanly in time, or a descriptor left over.
set -euo pipefail
common=(--echo_server=examples/echo/echo_server --http_server=examples/http/http_server
        --churn_load=tools/churn_load)
python3 tools/restart_test.py "${common[@]}" --restarts=10 --interval=0.5
python3 tools/restart_test.py "${common[@]}" --systemd
