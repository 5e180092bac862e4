// For tests: runs a DatagramServer's Start on a thread of its own, from construction until
// destruction (which stops it and waits). Thread safety: one owner.

#ifndef GEV_SERVER_TESTING_RUNNING_DATAGRAM_SERVER_H_
#define GEV_SERVER_TESTING_RUNNING_DATAGRAM_SERVER_H_

#include <thread>

#include "gtest/gtest.h"
#include "server/datagram_server.h"

namespace gev::testing {

class RunningDatagramServer {
 public:
  explicit RunningDatagramServer(DatagramServer* server) : server_(server) {
    thread_ = std::thread([this] { EXPECT_TRUE(server_->Start().ok()); });
  }
  ~RunningDatagramServer() {
    server_->Stop();
    thread_.join();
  }
  RunningDatagramServer(const RunningDatagramServer&) = delete;
  RunningDatagramServer& operator=(const RunningDatagramServer&) = delete;

 private:
  DatagramServer* server_;
  std::thread thread_;
};

}  // namespace gev::testing

#endif  // GEV_SERVER_TESTING_RUNNING_DATAGRAM_SERVER_H_
