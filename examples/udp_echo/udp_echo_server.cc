// A UDP echo server: every datagram goes back to its sender, as it came. Each loop reads with
// recvmmsg and answers a batch with one sendmmsg; with --loops above 1, one SO_REUSEPORT socket
// per loop.
//
//   tools/bazel run //examples/udp_echo:udp_echo_server -- --port=1833 --loops=2
//   (then, say: echo hello | nc -u -w1 127.0.0.1 1833)

#include <algorithm>
#include <cstdio>
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
ABSL_FLAG(int, receive_buffer, 0, "bytes of kernel receive buffer per socket (0: the default)");
ABSL_FLAG(bool, gso, true, "send a batch's replies to one peer of one size as one GSO message");
ABSL_FLAG(bool, gro, false, "let the kernel hand over runs from one peer as one buffer (GRO)");

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
  datagram.receive_buffer_bytes = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_receive_buffer)));
  datagram.gso = absl::GetFlag(FLAGS_gso);
  datagram.gro = absl::GetFlag(FLAGS_gro);
  Echo echo;
  auto server = gev::DatagramServer::Create(&echo, options, datagram);
  if (!server.ok()) return gev::examples::Fail(server.status());
  int exit_code = gev::examples::ServeUntilSignal(**server);
  // What batching did, for tools/udp_compare.sh and the curious.
  gev::DatagramLoopStats total = (*server)->Stats().Total();
  std::fprintf(stderr,
               "udp: %llu datagrams in %llu recvmmsg calls (%llu coalesced by GRO), %llu echoes "
               "in %llu sendmmsg calls (%llu GSO messages), %llu dropped by the kernel, %llu "
               "truncated\n",
               static_cast<unsigned long long>(total.received),
               static_cast<unsigned long long>(total.receive_calls),
               static_cast<unsigned long long>(total.gro_reads),
               static_cast<unsigned long long>(total.sent),
               static_cast<unsigned long long>(total.send_calls),
               static_cast<unsigned long long>(total.gso_messages),
               static_cast<unsigned long long>(total.kernel_drops),
               static_cast<unsigned long long>(total.truncated));
  return exit_code;
}
