// Every public header of the library, compiled with -Wconversion -Wsign-conversion -Werror
// (see tools/BUILD.bazel): a user who builds with those warnings on gets none from our headers.
// Compiling is the test; main() only says so.

#include "eventloop/event_handler.h"
#include "eventloop/event_loop.h"
#include "eventloop/log.h"
#include "eventloop/timing_wheel.h"
#include "http/request.h"
#include "net/acceptor.h"
#include "net/connection.h"
#include "net/connector.h"
#include "net/datagram_io.h"
#include "net/inet_address.h"
#include "net/resolver.h"
#include "net/socket_address.h"
#include "poller/poller.h"
#include "ringbuffer/block_queue.h"
#include "ringbuffer/ring_buffer.h"
#include "server/client.h"
#include "server/datagram_client.h"
#include "server/datagram_handler.h"
#include "server/datagram_server.h"
#include "server/frame.h"
#include "server/handler.h"
#include "server/load_balancer.h"
#include "server/options.h"
#include "server/protocol.h"
#include "server/reply.h"
#include "server/serve.h"
#include "server/server.h"

// Instantiates the header templates a user's code instantiates, so their bodies are checked.
namespace {
struct Counter {
  int hits = 0;
};
[[maybe_unused]] void Uses(gev::Connection& connection, gev::RingBuffer& buffer) {
  if (Counter* counter = connection.ContextAs<Counter>()) ++counter->hits;
  connection.EmplaceContext<Counter>();
  char scratch[8];
  (void)buffer.Contiguous(4, scratch, sizeof(scratch));
  (void)buffer.Find("\r\n");
  size_t items = 0;
  gev::http::ForEachListItem("a, b", [&](std::string_view) { return ++items < 2; });
}
}  // namespace

int main() { return 0; }
