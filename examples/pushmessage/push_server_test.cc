// End to end: push_server sends "hello\n" to every client on each tick.

#include <unistd.h>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"
#include "server/testing/loopback_client.h"

namespace gev::examples {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::ReadExactly;

TEST(PushServerTest, PushesToEveryClientEveryTick) {
  auto server = ExampleProcess::Start("examples/pushmessage/push_server",
                                      {"--port=0", "--loops=2", "--interval=20ms"});
  ASSERT_TRUE(server.ok()) << server.status();
  int first = Connect(server->address());
  int second = Connect(server->address());
  int gone = Connect(server->address());
  ::close(gone);  // The server must drop it and keep pushing to the others.
  for (int fd : {first, second}) {
    EXPECT_EQ(ReadExactly(fd, 18), "hello\nhello\nhello\n");
  }
  ::close(first);
  ::close(second);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace gev::examples
