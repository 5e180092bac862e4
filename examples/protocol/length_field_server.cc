// A server speaking a length-field protocol: each request is a 4-byte big-endian length and a
// payload; the reply to each is framed the same way and carries the payload reversed.
// Oversized or malformed frames close that client with a reason.
//
//   tools/bazel run //examples/protocol:length_field_server -- --port=1833 --max_frame=65536
//   tools/bazel run //examples/protocol:length_field_client -- --addr=127.0.0.1:1833

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "examples/common/serve.h"
#include "server/protocol.h"
#include "server/server.h"

ABSL_FLAG(int, port, 1833, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, -1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(uint32_t, max_frame, 64 * 1024, "largest payload accepted, in bytes");

namespace {

class ReverseHandler : public gev::Handler {
 public:
  // `frame` holds exactly one request's payload.
  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& frame) override {
    std::string payload = frame.Bytes();
    std::reverse(payload.begin(), payload.end());
    return payload;
  }
  void OnClose(gev::Connection& conn, const absl::Status& reason) override {
    if (!reason.ok()) {
      std::fprintf(stderr, "closed %s: %s\n", conn.PeerAddr().ToString().c_str(),
                   reason.ToString().c_str());
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A length-field protocol server. Usage: --port=1833");
  absl::ParseCommandLine(argc, argv);
  ReverseHandler handler;
  auto server = gev::NewServer(
      &handler, gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
      gev::NumLoops(absl::GetFlag(FLAGS_loops)),
      gev::CustomProtocol(
          std::make_shared<gev::LengthFieldProtocol>(absl::GetFlag(FLAGS_max_frame))));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeUntilSignal(**server);
}
