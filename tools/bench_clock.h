// Clocks the load generators share: a monotonic clock in nanoseconds, a process's CPU time
// (utime + stime of all its threads, from /proc/PID/stat) and this process's own (getrusage).
// For tools/ws_bench and tools/udp_bench, which report the server's CPU per message over their
// timed window. Thread safety: plain functions, safe anywhere.

#ifndef GEV_TOOLS_BENCH_CLOCK_H_
#define GEV_TOOLS_BENCH_CLOCK_H_

#include <cstdint>

namespace gev::bench {

// Nanoseconds of the steady clock.
uint64_t NowNs();
// utime + stime of process `pid`, in clock ticks (sysconf(_SC_CLK_TCK) a second); -1 when it
// cannot be read.
long long ProcessCpuTicks(int pid);
// This process's user and system CPU time, in nanoseconds.
uint64_t OwnCpuNs();

}  // namespace gev::bench

#endif  // GEV_TOOLS_BENCH_CLOCK_H_
