// The client for length_field_server: sends --count framed requests of random sizes up to
// --size bytes (several per write, split at random points) and checks every reply. Exits 0
// when all replies are right, 1 otherwise.
//
//   tools/bazel run //examples/protocol:length_field_client -- --addr=127.0.0.1:1833

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "net/inet_address.h"
#include "net/socket_ops.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:1833", "server address");
ABSL_FLAG(int, count, 1000, "requests to send");
ABSL_FLAG(int, size, 4096, "largest payload, in bytes");
ABSL_FLAG(int, pipeline, 8, "requests sent before reading their replies");

namespace {

std::string Frame(const std::string& payload) {
  uint32_t n = static_cast<uint32_t>(payload.size());
  std::string out = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8), static_cast<char>(n)};
  return out + payload;
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, std::string& out, size_t n) {
  out.resize(n);
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::read(fd, out.data() + done, n - done);
    if (got <= 0) return false;
    done += static_cast<size_t>(got);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Checks length_field_server. Usage: --addr=127.0.0.1:1833");
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<gev::InetAddress> address = gev::InetAddress::Parse(absl::GetFlag(FLAGS_addr));
  if (!address.ok()) {
    std::fprintf(stderr, "error: %s\n", address.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<int> fd = gev::sockets::ConnectBlocking(*address);
  if (!fd.ok()) {
    std::fprintf(stderr, "error: %s\n", fd.status().ToString().c_str());
    return 1;
  }
  // Blocking from here on, with a timeout so a silent server cannot hang the client.
  ::fcntl(*fd, F_SETFL, ::fcntl(*fd, F_GETFL) & ~O_NONBLOCK);
  timeval timeout{10, 0};
  ::setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::mt19937 random(42);
  std::uniform_int_distribution<int> size(0, std::max(0, absl::GetFlag(FLAGS_size)));
  const int count = absl::GetFlag(FLAGS_count);
  const int pipeline = std::max(1, absl::GetFlag(FLAGS_pipeline));
  int checked = 0;
  while (checked < count) {
    int batch = std::min(pipeline, count - checked);
    std::vector<std::string> payloads;
    std::string wire;
    for (int i = 0; i < batch; ++i) {
      std::string payload(static_cast<size_t>(size(random)), '\0');
      for (char& c : payload) c = static_cast<char>(random());
      wire += Frame(payload);
      payloads.push_back(std::move(payload));
    }
    // Two writes split at a random point: frames must survive any segmentation.
    size_t split = std::uniform_int_distribution<size_t>(0, wire.size())(random);
    if (!WriteAll(*fd, wire.substr(0, split)) || !WriteAll(*fd, wire.substr(split))) {
      std::fprintf(stderr, "error: write failed after %d replies\n", checked);
      return 1;
    }
    for (const std::string& payload : payloads) {
      std::string header;
      std::string reply;
      if (!ReadAll(*fd, header, 4)) {
        std::fprintf(stderr, "error: connection closed after %d replies\n", checked);
        return 1;
      }
      uint32_t n = (static_cast<uint32_t>(static_cast<uint8_t>(header[0])) << 24) |
                   (static_cast<uint32_t>(static_cast<uint8_t>(header[1])) << 16) |
                   (static_cast<uint32_t>(static_cast<uint8_t>(header[2])) << 8) |
                   static_cast<uint32_t>(static_cast<uint8_t>(header[3]));
      std::string expected(payload.rbegin(), payload.rend());
      if (n != expected.size() || !ReadAll(*fd, reply, n) || reply != expected) {
        std::fprintf(stderr, "error: reply %d is wrong\n", checked);
        return 1;
      }
      ++checked;
    }
  }
  ::close(*fd);
  std::printf("%d replies checked\n", checked);
  return 0;
}
