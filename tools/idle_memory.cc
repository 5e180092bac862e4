// idle_memory: what an idle connection costs a server process. Opens --connections clients to
// the server at --addr, echoes one small message on each, then reports the growth of the
// server's resident memory (VmRSS of --pid) per connection. Kernel socket buffers are not in
// RSS: the figure is the server's own user-space cost. --websocket upgrades each connection
// first (GET /) and echoes the message as one masked text frame: an idle WebSocket's cost.
//
//   tools/bazel run --config=opt //tools:idle_memory -- --addr=127.0.0.1:1833 --pid=1234
//   tools/bazel run --config=opt //tools:idle_memory -- --addr=127.0.0.1:8080 --pid=1234 --websocket
//   tools/bazel run --config=opt //tools:idle_memory -- --addr=127.0.0.1:1833 --pid=1234 --burst
//
// Needs 10,000 descriptors here and the server needs as many (both raise their soft limit).

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "net/inet_address.h"
#include "net/socket_ops.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:1833", "echo server address");
ABSL_FLAG(int, pid, 0, "the server's process id");
ABSL_FLAG(int, connections, 10000, "connections to open");
ABSL_FLAG(std::string, message, "hello\n", "the message echoed once per connection");
ABSL_FLAG(bool, json, false, "print one JSON line");
ABSL_FLAG(bool, websocket, false, "upgrade to WebSocket first and echo one text frame");
ABSL_FLAG(bool, burst, false,
          "open every connection first, then send on all, then read every echo (the server "
          "sees many ready at once) instead of one connection and its echo at a time");

namespace {

// VmRSS in KiB, or -1.
long ResidentKiB(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

bool EchoOnce(int fd, const std::string& message) {
  if (::write(fd, message.data(), message.size()) != static_cast<ssize_t>(message.size())) {
    return false;
  }
  std::string reply(message.size(), '\0');
  size_t got = 0;
  while (got < reply.size()) {
    ssize_t n = ::read(fd, reply.data() + got, reply.size() - got);
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return reply == message;
}

bool ReadExactly(int fd, std::string* out, size_t n) {
  out->resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, out->data() + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// The upgrade (RFC 6455's sample key; the accept value is not this tool's to check), then one
// masked text frame of `message` (under 126 bytes) and its unmasked echo.
bool WebSocketEchoOnce(int fd, const std::string& message) {
  const std::string request =
      "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  if (message.size() > 125 ||
      ::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    return false;
  }
  std::string head;
  char byte;
  while (head.size() < 4 || head.compare(head.size() - 4, 4, "\r\n\r\n") != 0) {
    if (::read(fd, &byte, 1) != 1) return false;
    head.push_back(byte);
  }
  if (head.rfind("HTTP/1.1 101", 0) != 0) return false;
  const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
  std::string frame = {static_cast<char>(0x81), static_cast<char>(0x80 | message.size())};
  frame.append(reinterpret_cast<const char*>(key), 4);
  for (size_t i = 0; i < message.size(); ++i) frame.push_back(static_cast<char>(message[i] ^ key[i % 4]));
  if (::write(fd, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) return false;
  std::string echo;
  return ReadExactly(fd, &echo, 2 + message.size()) &&
         echo.substr(2) == message && static_cast<unsigned char>(echo[0]) == 0x81;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Server RSS per idle connection. Usage: --addr=... --pid=...");
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<gev::InetAddress> address = gev::InetAddress::Parse(absl::GetFlag(FLAGS_addr));
  const int pid = absl::GetFlag(FLAGS_pid);
  const int count = absl::GetFlag(FLAGS_connections);
  if (!address.ok() || pid <= 0 || count <= 0 || ResidentKiB(pid) < 0) {
    std::fprintf(stderr, "error: need --addr, --pid of a running server, --connections > 0\n");
    return 2;
  }
  (void)gev::sockets::RaiseOpenFileLimit();  // Best effort: connects fail visibly if short.

  const std::string message = absl::GetFlag(FLAGS_message);
  long before = ResidentKiB(pid);
  std::vector<int> clients;
  int failures = 0;
  // With --websocket each connection upgrades and echoes in turn: --burst does not apply.
  const bool burst = absl::GetFlag(FLAGS_burst) && !absl::GetFlag(FLAGS_websocket);
  if (burst) {
    std::vector<int> open;
    for (int i = 0; i < count; ++i) {
      int fd = ::socket(address->family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
      timeval timeout{5, 0};
      if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      if (fd < 0 || ::connect(fd, address->sockaddr(), address->length()) != 0) {
        if (failures++ == 0) std::perror("connect");
        if (fd >= 0) ::close(fd);
        continue;
      }
      open.push_back(fd);
    }
    std::vector<bool> sent(open.size());
    for (size_t i = 0; i < open.size(); ++i) {
      sent[i] = ::write(open[i], message.data(), message.size()) ==
                static_cast<ssize_t>(message.size());
    }
    for (size_t i = 0; i < open.size(); ++i) {
      std::string reply;
      if (!sent[i] || !ReadExactly(open[i], &reply, message.size()) || reply != message) {
        if (failures++ == 0) std::fprintf(stderr, "echo failed\n");
        ::close(open[i]);
        continue;
      }
      clients.push_back(open[i]);
    }
  }
  for (int i = 0; i < count && !burst; ++i) {
    int fd = ::socket(address->family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval timeout{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    if (fd < 0 || ::connect(fd, address->sockaddr(), address->length()) != 0 ||
        !(absl::GetFlag(FLAGS_websocket) ? WebSocketEchoOnce(fd, message) : EchoOnce(fd, message))) {
      if (failures++ == 0) std::perror("connect/echo");
      if (fd >= 0) ::close(fd);
      continue;
    }
    clients.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Let the server settle.
  long after = ResidentKiB(pid);
  double per_connection =
      clients.empty() ? 0 : static_cast<double>(after - before) * 1024.0 / clients.size();
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"connections\":%zu,\"failures\":%d,\"rss_before_kib\":%ld,"
                "\"rss_after_kib\":%ld,\"bytes_per_connection\":%.1f}\n",
                clients.size(), failures, before, after, per_connection);
  } else {
    std::printf("%zu idle connections (%d failed): RSS %ld KiB -> %ld KiB, %.1f bytes per "
                "connection\n",
                clients.size(), failures, before, after, per_connection);
  }
  for (int fd : clients) ::close(fd);
  return failures == 0 ? 0 : 1;
}
