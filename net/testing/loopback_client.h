// -----------------------------------------------------------------------------
// File: net/testing/loopback_client.h
// -----------------------------------------------------------------------------
//
// Test helpers: blocking loopback clients with timeouts, so no test can hang on a socket.
//
//   int fd = gev::testing::Connect(address);
//   ASSERT_TRUE(gev::testing::WriteAll(fd, "ping"));
//   EXPECT_EQ(gev::testing::ReadExactly(fd, 4), "ping");
//
// Thread safety: the functions are independent of each other.

#ifndef GEV_NET_TESTING_LOOPBACK_CLIENT_H_
#define GEV_NET_TESTING_LOOPBACK_CLIENT_H_

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "net/inet_address.h"
#include "net/socket_address.h"

namespace gev::testing {

// A blocking client connected to `address`, with 5 s send and receive timeouts (and the given
// receive buffer size, if positive); -1 on failure.
int Connect(const SocketAddress& address, int receive_buffer = 0);
// Writes all of `data`; false on error or timeout.
bool WriteAll(int fd, std::string_view data);
// Reads until `n` bytes, EOF, error or timeout, and returns what came; at most `chunk` bytes
// per read, sleeping `pause_ms` after each (a slow reader).
std::string ReadExactly(int fd, size_t n, size_t chunk = 64 * 1024, int pause_ms = 0);
// True when the next read sees EOF or a reset (not data, not a timeout).
bool SeesEndOfStream(int fd);
// Reads to the end of the stream (EOF, an error, or a read that times out) and returns what
// came; `reset` says whether it ended with ECONNRESET rather than a FIN.
std::string ReadToEnd(int fd, bool* reset);

// A blocking listener on 127.0.0.1 with a free port (in `address`), for a plain peer a test
// writes itself (an upstream, an OpenSSL server); `buffer_size` positive sets the receive and
// send buffers its connections inherit. -1 on failure.
int ListenOnLoopback(InetAddress* address, int buffer_size = 0);
// Accepts one connection within `timeout_ms`, blocking, with 10 s receive and send timeouts so
// that the peer's thread cannot hang; -1 if none came.
int AcceptWithin(int listener, int timeout_ms = 10000);
// `n` bytes of a pattern that differs per `seed`.
std::string Pattern(size_t n, int seed = 0);
// A name no other test on this machine uses now, for Unix socket paths and abstract names:
// `prefix`, this process's id and 64 random bits (the id alone repeats across PID namespaces,
// so two sandboxed runs of one test, or two CI runs at once, could share it).
std::string UniqueName(std::string_view prefix);
// A loopback address nothing listens on (a listener's, closed): connects to it are refused.
InetAddress UnusedLoopbackAddress();

// A listener that never accepts, its backlog filled: connects to it hang, as to a server too
// busy to answer, because Linux drops their SYNs (with net.ipv4.tcp_abort_on_overflow unset,
// its default; a BSD refuses them instead). Closes everything when destroyed.
class FullBacklogListener {
 public:
  FullBacklogListener();
  ~FullBacklogListener();
  FullBacklogListener(const FullBacklogListener&) = delete;
  FullBacklogListener& operator=(const FullBacklogListener&) = delete;
  const InetAddress& address() const { return address_; }

 private:
  int listener_ = -1;
  std::vector<int> fillers_;
  InetAddress address_;
};

// Polls `condition` every 2 ms for up to `timeout_ms`; returns its last value.
template <typename Condition>
bool WaitFor(Condition condition, int timeout_ms = 5000) {
  for (int waited = 0; waited < timeout_ms; waited += 2) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

}  // namespace gev::testing

#endif  // GEV_NET_TESTING_LOOPBACK_CLIENT_H_
