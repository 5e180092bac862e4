// -----------------------------------------------------------------------------
// File: server/testing/loopback_client.h
// -----------------------------------------------------------------------------
//
// Test helpers: blocking loopback clients with timeouts (no test can hang on a socket) and a
// runner that serves a Server on a thread for the length of a test.
//
//   auto server = gev::NewServer(&handler, gev::Address("127.0.0.1:0"));
//   gev::testing::ServerThread running(server->get());   // Start() on a thread
//   int fd = gev::testing::Connect((*server)->ListenAddress());
//   gev::testing::WriteAll(fd, "ping");
//   EXPECT_EQ(gev::testing::ReadExactly(fd, 4), "ping");
//
// Thread safety: the functions are independent; ServerThread is used by one test thread.

#ifndef GEV_SERVER_TESTING_LOOPBACK_CLIENT_H_
#define GEV_SERVER_TESTING_LOOPBACK_CLIENT_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <thread>

#include "net/inet_address.h"
#include "server/server.h"

namespace gev::testing {

// A blocking client connected to `address`, with 5 s send and receive timeouts; -1 on failure.
int Connect(const InetAddress& address, int receive_buffer = 0);
// Writes all of `data`; false on error or timeout.
bool WriteAll(int fd, std::string_view data);
// Reads until `n` bytes, EOF, error or timeout, and returns what came.
std::string ReadExactly(int fd, size_t n);
// True when the next read sees EOF or a reset (not data, not a timeout).
bool SeesEndOfStream(int fd);
// `payload` behind a 4-byte big-endian length, as LengthFieldProtocol frames it.
std::string LengthFramed(std::string_view payload);
// `n` bytes of a pattern that differs per `seed`.
std::string Pattern(size_t n, int seed = 0);
// Polls `condition` every 2 ms for up to `timeout_ms`; returns its last value.
template <typename Condition>
bool WaitFor(Condition condition, int timeout_ms = 5000) {
  for (int waited = 0; waited < timeout_ms; waited += 2) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

// Runs server->Start() on a thread; stops the server and joins on destruction.
class ServerThread {
 public:
  explicit ServerThread(Server* server) : server_(server), thread_([server] { server->Start(); }) {}
  ~ServerThread() { Join(); }
  // Stops the server and waits for Start() to return.
  void Join() {
    if (!thread_.joinable()) return;
    server_->Stop();
    thread_.join();
  }

 private:
  Server* server_;
  std::thread thread_;
};

}  // namespace gev::testing

#endif  // GEV_SERVER_TESTING_LOOPBACK_CLIENT_H_
