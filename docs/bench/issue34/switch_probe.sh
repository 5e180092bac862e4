#!/bin/bash
# The probe behind docs/performance.md, "Why one rule cannot serve both" (not a maintained tool):
#   switch_probe.sh NAME "SERVER COMMAND" ECHO_BENCH_FLAGS...
# starts the server pinned to CPU 0 and bazel-bin/tools/echo_bench on CPU 1 for 5 s, and over a
# 3 s window in the middle prints the rate, MiB per server CPU tick, the CPU ticks of both, the
# context switches of server and client per GiB echoed, and TCP segments sent per GiB (all of
# the machine, /proc/net/snmp). The server commands were examples/echo/echo_server --port=0
# --loops=1 [--reads_per_event=32] and tools/peers uv_echo --port=0 --threads=1.
name=$1; cmd=$2; shift 2
bench="$(git rev-parse --show-toplevel)/bazel-bin/tools/echo_bench"
log="${TMPDIR:-/tmp}/srv.$$.log"
taskset -c 0 $cmd > $log 2>&1 &
pid=$!
for i in $(seq 50); do port=$(grep -o 'listening on [0-9.:]*' $log | head -1 | sed 's/.*://'); [ -n "$port" ] && break; sleep 0.1; done
taskset -c 1 $bench --addr=127.0.0.1:$port "$@" --duration=5s > "${TMPDIR:-/tmp}/cl.$$.log" 2>&1 &
cpid=$!
sleep 1.5
ctx() { awk '/ctxt_switches/{s+=$2} END{print s}' /proc/$1/task/*/status; }
segs() { awk '/^Tcp:/{if(h){print $12, $11}; h=1}' /proc/net/snmp; }
t0=$(awk '{print $14+$15}' /proc/$pid/stat); ct0=$(awk '{print $14+$15}' /proc/$cpid/stat); s0=$(ctx $pid); c0=$(ctx $cpid); read o0 i0 < <(segs)
sleep 3
t1=$(awk '{print $14+$15}' /proc/$pid/stat); ct1=$(awk '{print $14+$15}' /proc/$cpid/stat); s1=$(ctx $pid); c1=$(ctx $cpid); read o1 i1 < <(segs)
wait $cpid
rate=$(grep -o '[0-9.]* MiB/s' "${TMPDIR:-/tmp}/cl.$$.log" | head -1 | cut -d' ' -f1)
gb=$(echo "$rate*3/1024" | bc -l)
printf "%s rate=%s MBtick=%.2f srvticks=%d clticks=%d srvctx/GB=%.0f clctx/GB=%.0f segs/GB=%.0f\n" $name $rate $(echo "$rate*3/($t1-$t0)" | bc -l) $((t1-t0)) $((ct1-ct0)) $(echo "($s1-$s0)/$gb" | bc -l) $(echo "($c1-$c0)/$gb" | bc -l) $(echo "($o1-$o0)/$gb" | bc -l)
kill $pid; wait $pid 2>/dev/null; rm -f $log "${TMPDIR:-/tmp}/cl.$$.log"
