// -----------------------------------------------------------------------------
// File: examples/testing/subprocess.h
// -----------------------------------------------------------------------------
//
// Runs an example binary for an end-to-end test: starts it with arguments, reads the
// "listening on <address>" line it prints, and stops it with SIGTERM (SIGKILL if it does not
// exit in time), reporting its exit status.
//
//   auto server = gev::examples::ExampleProcess::Start("examples/echo/echo_server",
//                                                      {"--port=0", "--loops=2"});
//   ASSERT_TRUE(server.ok());
//   int fd = gev::testing::Connect(server->address());
//   ...
//   EXPECT_EQ(server->Terminate(), 0);   // clean exit after SIGTERM
//
// Thread safety: one test thread.

#ifndef GEV_EXAMPLES_TESTING_SUBPROCESS_H_
#define GEV_EXAMPLES_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "net/inet_address.h"

namespace gev::examples {

class ExampleProcess {
 public:
  // Starts `path` (relative to the test's runfiles directory) and waits up to 10 s for its
  // "listening on <address>" line. A `descriptor_limit` above zero is the process's
  // RLIMIT_NOFILE, soft and hard (so it cannot raise it).
  static absl::StatusOr<ExampleProcess> Start(const std::string& path,
                                              const std::vector<std::string>& args,
                                              int descriptor_limit = 0);
  ExampleProcess(ExampleProcess&& other) noexcept;
  ExampleProcess& operator=(ExampleProcess&&) = delete;
  ~ExampleProcess();

  // Starts `path` without waiting for anything: for a client, which does not listen.
  static absl::StatusOr<ExampleProcess> StartClient(const std::string& path,
                                                    const std::vector<std::string>& args,
                                                    int descriptor_limit = 0);
  // Reads the process's output up to the next line containing `text` (lines before it are
  // skipped) and returns that line; DeadlineExceeded after `timeout_ms`, Unavailable at EOF.
  absl::StatusOr<std::string> WaitForLine(const std::string& text, int timeout_ms = 10000);

  // A loopback address for the port the example listens on.
  const InetAddress& address() const { return address_; }
  pid_t pid() const { return pid_; }
  // Sends SIGTERM, waits up to 10 s (then SIGKILL); returns the exit code, or 128 + signal.
  int Terminate();

 private:
  ExampleProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  InetAddress address_;
  std::string unread_;  // Output read but not yet returned by WaitForLine.
};

// Runs `path` with `args` to completion (at most `timeout_seconds`) and returns its exit code,
// or 128 + signal; -1 if it could not start.
int RunToCompletion(const std::string& path, const std::vector<std::string>& args,
                    int timeout_seconds = 30);

}  // namespace gev::examples

#endif  // GEV_EXAMPLES_TESTING_SUBPROCESS_H_
