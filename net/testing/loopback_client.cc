#include "net/testing/loopback_client.h"

#include "net/socket_ops.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

namespace gev::testing {

int Connect(const SocketAddress& address, int receive_buffer) {
  int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (receive_buffer > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
  }
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_storage storage;
  socklen_t length = address.Fill(&storage);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

InetAddress UnusedLoopbackAddress() {
  absl::StatusOr<int> fd = sockets::Listen(InetAddress::Loopback(0), false);
  if (!fd.ok()) return InetAddress::Loopback(1);
  absl::StatusOr<InetAddress> address = sockets::LocalAddress(*fd);
  ::close(*fd);
  return address.ok() ? *address : InetAddress::Loopback(1);
}

FullBacklogListener::FullBacklogListener() {
  // Backlog 0 holds one connection in the accept queue; nothing accepts, so once it is taken
  // the SYNs of later connects are dropped.
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false, 0);
  if (!listener.ok()) return;
  listener_ = *listener;
  address_ = *sockets::LocalAddress(listener_);
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<int> fd = sockets::CreateNonBlockingSocket(AF_INET);
    if (!fd.ok()) continue;
    (void)::connect(*fd, address_.sockaddr(), address_.length());  // EINPROGRESS or hanging.
    fillers_.push_back(*fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // Handshakes that can, complete.
}

FullBacklogListener::~FullBacklogListener() {
  for (int fd : fillers_) ::close(fd);
  if (listener_ >= 0) ::close(listener_);
}

bool WriteAll(int fd, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string ReadExactly(int fd, size_t n, size_t chunk, int pause_ms) {
  std::string out;
  std::vector<char> buffer(chunk);
  while (out.size() < n) {
    ssize_t got = ::read(fd, buffer.data(), std::min(buffer.size(), n - out.size()));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buffer.data(), static_cast<size_t>(got));
    if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
  return out;
}

bool SeesEndOfStream(int fd) {
  char byte;
  ssize_t n = ::read(fd, &byte, 1);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + static_cast<size_t>(seed)) % 251);
  return s;
}

std::string UniqueName(std::string_view prefix) {
  std::random_device entropy;
  uint64_t bits = (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
  char suffix[64];
  std::snprintf(suffix, sizeof(suffix), "-%ld-%016llx", static_cast<long>(::getpid()),
                static_cast<unsigned long long>(bits));
  return std::string(prefix) + suffix;
}

std::string ReadToEnd(int fd, bool* reset) {
  std::string received;
  std::vector<char> buffer(64 * 1024);
  for (;;) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n > 0) {
      received.append(buffer.data(), static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    *reset = n < 0 && errno == ECONNRESET;
    return received;
  }
}

int ListenOnLoopback(InetAddress* address, int buffer_size) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return -1;
  if (buffer_size > 0) {
    ::setsockopt(listener, SOL_SOCKET, SO_RCVBUF, &buffer_size, sizeof(buffer_size));
    ::setsockopt(listener, SOL_SOCKET, SO_SNDBUF, &buffer_size, sizeof(buffer_size));
  }
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(any);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&any), length) != 0 ||
      ::listen(listener, 16) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&any), &length) != 0) {
    ::close(listener);
    return -1;
  }
  *address = InetAddress::Loopback(ntohs(any.sin_port), AF_INET);
  return listener;
}

int AcceptWithin(int listener, int timeout_ms) {
  pollfd ready{listener, POLLIN, 0};
  if (::poll(&ready, 1, timeout_ms) != 1) return -1;
  int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return -1;
  timeval patience{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof(patience));
  return fd;
}

}  // namespace gev::testing
