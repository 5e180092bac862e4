// -----------------------------------------------------------------------------
// File: net/testing/test_process.h
// -----------------------------------------------------------------------------
//
// Test helper: a server (or any body) in a process of its own, for tests that need their own
// descriptor limit or a process to kill.
//
//   // The child's side: a disabled test that only StartTestProcess runs.
//   TEST(ServerProcess, DISABLED_Serve) { Serve(std::getenv("MY_SPEC")); }
//   ...
//   pid_t child = gev::testing::StartTestProcess("ServerProcess.DISABLED_Serve", "MY_SPEC=...",
//                                                [&] { Serve(spec); });
//
// On Linux the child is this test binary again (posix_spawn of /proc/self/exe) running only the
// named test, with the variable added to its environment: a forked copy of a process that has
// used libkqueue must exec (libkqueue's BUGS.md), and posix_spawn runs no atfork handler in
// between (libkqueue's closes descriptor numbers it may hold stale). Elsewhere (the BSDs and
// macOS, whose kqueues are not inherited and which may have no /proc) it is a fork that calls
// `body_after_fork`, which must not return. Descriptors without close-on-exec are inherited.
//
// Thread safety: call from the test thread.

#ifndef GEV_NET_TESTING_TEST_PROCESS_H_
#define GEV_NET_TESTING_TEST_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <string>

namespace gev::testing {

// Returns the child's pid, or -1.
pid_t StartTestProcess(const std::string& gtest_name, const std::string& environment_entry,
                       const std::function<void()>& body_after_fork);

}  // namespace gev::testing

#endif  // GEV_NET_TESTING_TEST_PROCESS_H_
