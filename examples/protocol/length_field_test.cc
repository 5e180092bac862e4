// End to end: length_field_client checks length_field_server's replies; an oversized frame
// closes only its own connection.

#include <unistd.h>

#include <string>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"
#include "server/testing/loopback_client.h"

namespace gev::examples {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::ReadExactly;
using ::gev::testing::SeesEndOfStream;
using ::gev::testing::WriteAll;

TEST(LengthFieldExampleTest, ClientGetsEveryReplyRight) {
  auto server = ExampleProcess::Start("examples/protocol/length_field_server",
                                      {"--port=0", "--loops=2", "--max_frame=8192"});
  ASSERT_TRUE(server.ok()) << server.status();
  std::string addr = "--addr=127.0.0.1:" + std::to_string(server->address().port());
  EXPECT_EQ(RunToCompletion("examples/protocol/length_field_client",
                            {addr, "--count=2000", "--size=8192", "--pipeline=16"}),
            0);

  int bystander = Connect(server->address());
  int hostile = Connect(server->address());
  ASSERT_TRUE(WriteAll(hostile, std::string("\x00\x01\x00\x01", 4)));  // 65,537 > 8,192.
  EXPECT_TRUE(SeesEndOfStream(hostile));
  ASSERT_TRUE(WriteAll(bystander, std::string("\x00\x00\x00\x03" "abc", 7)));
  EXPECT_EQ(ReadExactly(bystander, 7), std::string("\x00\x00\x00\x03" "cba", 7));
  ::close(hostile);
  ::close(bystander);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace gev::examples
