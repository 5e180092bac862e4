// A WebSocket echo server: every message comes back as it came (text as text, binary as
// binary). --deflate offers permessage-deflate; --tls_cert/--tls_key serve wss://.
//
//   tools/bazel run //examples/websocket:echo_server -- --port=8080 --deflate
//   (then, say: python3 -m websockets ws://127.0.0.1:8080/)

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "examples/websocket/flags.h"
#include "websocket/websocket.h"

namespace {

class Echo : public gev::websocket::Handler {
 public:
  void OnMessage(gev::websocket::Socket& socket, std::string_view message,
                 gev::websocket::MessageType type) override {
    // Refused past the connection's pending cap: that client reads too slowly to be echoed,
    // so it is closed rather than sent part of its stream.
    absl::Status sent = socket.Send(message, type);
    if (absl::IsResourceExhausted(sent)) {
      // Refused only if a close frame went already: the socket is closing either way.
      (void)socket.Close(gev::websocket::kClosePolicyViolation, "not reading its echoes");
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A WebSocket echo server. Usage: echo_server --port=8080");
  absl::ParseCommandLine(argc, argv);
  Echo echo;
  gev::websocket::Service service(&echo, gev::examples::WebSocketOptionsFromFlags());
  return gev::examples::ServeWebSocket(service);
}
