// End to end: idle_server closes the quiet client and keeps the talking one.

#include <unistd.h>

#include <chrono>
#include <thread>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"
#include "server/testing/loopback_client.h"

namespace gev::examples {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::ReadExactly;
using ::gev::testing::SeesEndOfStream;
using ::gev::testing::WriteAll;

TEST(IdleServerTest, ClosesOnlyTheIdleClient) {
  auto server = ExampleProcess::Start("examples/idleconnection/idle_server",
                                      {"--port=0", "--loops=1", "--idle=600ms"});
  ASSERT_TRUE(server.ok()) << server.status();
  int idle = Connect(server->address());
  int talking = Connect(server->address());
  for (int i = 0; i < 10; ++i) {  // 100 ms apart: never near 600 ms quiet.
    ASSERT_TRUE(WriteAll(talking, "tick"));
    EXPECT_EQ(ReadExactly(talking, 4), "tick");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(SeesEndOfStream(idle));
  ASSERT_TRUE(WriteAll(talking, "alive"));
  EXPECT_EQ(ReadExactly(talking, 5), "alive");
  ::close(idle);
  ::close(talking);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace gev::examples
