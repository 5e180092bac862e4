// A UDP echo server: every datagram goes back to its sender, as it came. Each loop reads with
// recvmmsg and answers a batch with one sendmmsg; with --loops above 1, one SO_REUSEPORT socket
// per loop.
//
//   tools/bazel run //examples/udp_echo:udp_echo_server -- --port=1833 --loops=2
//   (then, say: echo hello | nc -u -w1 127.0.0.1 1833)

#include <algorithm>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "examples/common/serve.h"
#include "server/datagram_server.h"

ABSL_FLAG(int, port, 1833, "UDP port (0: any free port)");
ABSL_FLAG(int, loops, 1, "loops (<= 0: one per CPU); above 1, one SO_REUSEPORT socket each");
ABSL_FLAG(std::string, network, "udp", "udp, udp4 or udp6 (udp6 on [::] takes IPv4 too)");
ABSL_FLAG(int, batch, 64, "datagrams per recvmmsg and replies per sendmmsg");
ABSL_FLAG(int, max_datagram, 65527, "longest datagram echoed; a longer one is counted, not echoed");

namespace {

class Echo : public gev::DatagramHandler {
 public:
  // The payload itself, written from the loop's receive buffer without a copy.
  gev::Reply OnDatagram(gev::Datagram& datagram) override {
    return gev::Reply::FromBuffer(datagram.payload.size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A UDP echo server. Usage: udp_echo_server --port=1833 --loops=2");
  absl::ParseCommandLine(argc, argv);
  const std::string network = absl::GetFlag(FLAGS_network);
  const int port = absl::GetFlag(FLAGS_port);
  gev::ServerOptions options;
  options.network = network;
  options.address = network == "udp6" ? absl::StrCat("[::]:", port) : absl::StrCat(":", port);
  options.num_loops = absl::GetFlag(FLAGS_loops);
  gev::DatagramOptions datagram;
  datagram.batch = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_batch)));
  datagram.max_datagram = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_datagram)));
  Echo echo;
  auto server = gev::DatagramServer::Create(&echo, options, datagram);
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeUntilSignal(**server);
}
