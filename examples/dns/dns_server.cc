// An authoritative DNS server for one small zone over UDP, on gev's loops: each loop reads
// queries with recvmmsg and sends a batch's answers with one sendmmsg (examples/dns/dns.h has
// what it answers).
//
//   tools/bazel run //examples/dns:dns_server --
//       --zone=$PWD/examples/dns/example.zone --port=5353 --loops=2
//   (then: dig @127.0.0.1 -p 5353 www.example.com)

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "examples/common/serve.h"
#include "examples/dns/dns.h"
#include "server/datagram_server.h"

ABSL_FLAG(std::string, zone, "", "the zone file (RFC 1035 form: $ORIGIN, $TTL, A, AAAA, NS, SOA)");
ABSL_FLAG(int, port, 5353, "UDP port (0: any free port)");
ABSL_FLAG(int, loops, 1, "loops (<= 0: one per CPU); above 1, one SO_REUSEPORT socket each");
ABSL_FLAG(std::string, network, "udp", "udp, udp4 or udp6 (udp6 on [::] takes IPv4 too)");
ABSL_FLAG(int, batch, 64, "queries per recvmmsg and answers per sendmmsg (1: one of each a call)");

namespace {

class Responder : public gev::DatagramHandler {
 public:
  explicit Responder(const gev::examples::dns::Zone* zone) : zone_(zone) {}

  gev::Reply OnDatagram(gev::Datagram& datagram) override {
    // One buffer per loop thread: the server copies a view's bytes before calling again.
    thread_local std::string response;
    if (!gev::examples::dns::Answer(*zone_, datagram.payload, &response)) return {};
    return gev::Reply::View(response);
  }

 private:
  const gev::examples::dns::Zone* zone_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("An authoritative DNS server. Usage: dns_server --zone=FILE");
  absl::ParseCommandLine(argc, argv);
  std::ifstream file(absl::GetFlag(FLAGS_zone));
  if (!file) {
    return gev::examples::Fail(absl::NotFoundError(
        absl::StrCat("cannot read the zone file \"", absl::GetFlag(FLAGS_zone), "\"")));
  }
  std::stringstream text;
  text << file.rdbuf();
  absl::StatusOr<gev::examples::dns::Zone> zone = gev::examples::dns::Zone::Parse(text.str());
  if (!zone.ok()) return gev::examples::Fail(zone.status());
  const std::string network = absl::GetFlag(FLAGS_network);
  const int port = absl::GetFlag(FLAGS_port);
  gev::ServerOptions options;
  options.network = network;
  options.address = network == "udp6" ? absl::StrCat("[::]:", port) : absl::StrCat(":", port);
  options.num_loops = absl::GetFlag(FLAGS_loops);
  gev::DatagramOptions datagram;
  datagram.max_datagram = 4096;  // A query is small; EDNS0 allows up to this much.
  datagram.batch = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_batch)));
  Responder responder(&*zone);
  auto server = gev::DatagramServer::Create(&responder, options, datagram);
  if (!server.ok()) return gev::examples::Fail(server.status());
  int exit_code = gev::examples::ServeUntilSignal(**server);
  // What batching did, for tools/dns_compare.sh and the curious.
  gev::DatagramLoopStats total = (*server)->Stats().Total();
  std::fprintf(stderr,
               "udp: %llu queries in %llu recvmmsg calls, %llu answers in %llu sendmmsg calls, "
               "%llu dropped by the kernel\n",
               static_cast<unsigned long long>(total.received),
               static_cast<unsigned long long>(total.receive_calls),
               static_cast<unsigned long long>(total.sent),
               static_cast<unsigned long long>(total.send_calls),
               static_cast<unsigned long long>(total.kernel_drops));
  return exit_code;
}
