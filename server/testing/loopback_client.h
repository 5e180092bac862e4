// -----------------------------------------------------------------------------
// File: server/testing/loopback_client.h
// -----------------------------------------------------------------------------
//
// Test helpers for servers: the loopback clients of net/testing/loopback_client.h, a
// length-field framer, and a runner that serves a Server on a thread for a test's length.
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

#include "gtest/gtest.h"
#include "net/inet_address.h"
#include "net/testing/loopback_client.h"  // IWYU pragma: export
#include "server/server.h"

namespace gev::testing {

// `payload` behind a 4-byte big-endian length, as LengthFieldProtocol frames it.
std::string LengthFramed(std::string_view payload);

// Runs server->Start() on a thread; stops the server and joins on destruction.
class ServerThread {
 public:
  explicit ServerThread(Server* server)
      : server_(server), thread_([server] { EXPECT_TRUE(server->Start().ok()); }) {}
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
