// End to end: max_connection_server refuses clients over --max and counts only the admitted.

#include <unistd.h>

#include <string>
#include <vector>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"
#include "server/testing/loopback_client.h"

namespace gev::examples {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::ReadExactly;
using ::gev::testing::SeesEndOfStream;
using ::gev::testing::WriteAll;

bool Echoes(int fd) { return WriteAll(fd, "ping") && ReadExactly(fd, 4) == "ping"; }

TEST(MaxConnectionServerTest, RefusesOverTheCapAndFreesOnlyAdmittedSlots) {
  auto server = ExampleProcess::Start("examples/maxconnection/max_connection_server",
                                      {"--port=0", "--loops=2", "--max=3"});
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> admitted;
  for (int i = 0; i < 3; ++i) {
    admitted.push_back(Connect(server->address()));
    ASSERT_TRUE(Echoes(admitted.back())) << "client " << i;
  }
  // Refused clients, closing, must not free slots they never had.
  for (int i = 0; i < 3; ++i) {
    int refused = Connect(server->address());
    EXPECT_EQ(ReadExactly(refused, 21), "too many connections\n");
    EXPECT_TRUE(SeesEndOfStream(refused));
    ::close(refused);
  }
  int still_refused = Connect(server->address());
  EXPECT_EQ(ReadExactly(still_refused, 21), "too many connections\n");
  ::close(still_refused);

  ::close(admitted[0]);  // One slot frees up.
  bool admitted_again = false;
  for (int attempt = 0; attempt < 100 && !admitted_again; ++attempt) {
    int fd = Connect(server->address());
    admitted_again = Echoes(fd);
    ::close(fd);
    if (!admitted_again) usleep(10000);  // The server may not have seen the close yet.
  }
  EXPECT_TRUE(admitted_again);
  for (size_t i = 1; i < admitted.size(); ++i) ::close(admitted[i]);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace gev::examples
