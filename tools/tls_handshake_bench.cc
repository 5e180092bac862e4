// tls_handshake_bench: TLS handshakes per second against any HTTPS server, full or resumed.
//
//   tools/bazel run --config=opt //tools:tls_handshake_bench -- --addr=127.0.0.1:8443
//       --concurrency=32 --duration=10s --resume                        (one line)
//
// Each of --concurrency slots, over and over: connects, shakes hands (TLS 1.3 unless
// --tls_version=1.2), sends one HTTP/1.1 GET of --path, reads the whole response (by its
// Content-Length), sends close_notify and closes. With --resume every slot offers the session
// of its previous connection (TLS 1.3 tickets are used once, so each connection's newest
// ticket), after one full handshake per slot in the warmup; without it every handshake is a
// full one. Counts connections completed in the measured time, how many resumed, and errors;
// prints one line "<completed> <per second> <resumed fraction> <errors>" with --brief, or text.
// The certificate is not checked (the cost measured is the handshake's, not the trust store's).
// One thread, epoll; non-blocking everything.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:8443", "server address, IPv4 host:port");
ABSL_FLAG(int, concurrency, 32, "connections in flight");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "measured time");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "time before measuring");
ABSL_FLAG(bool, resume, false, "offer each slot's last session (resumed handshakes)");
ABSL_FLAG(std::string, tls_version, "1.3", "1.3 or 1.2");
ABSL_FLAG(std::string, path, "/plaintext", "the path requested after each handshake");
ABSL_FLAG(bool, brief, false, "print one line of numbers");

namespace {

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

enum class Phase { kConnecting, kHandshake, kWriting, kReading };

struct Slot {
  int fd = -1;
  SSL* ssl = nullptr;
  SSL_SESSION* session = nullptr;  // To offer next (--resume).
  Phase phase = Phase::kConnecting;
  size_t request_sent = 0;
  std::string response;
};

class Bench {
 public:
  Bench(SSL_CTX* ctx, sockaddr_in address, std::string request, bool resume)
      : ctx_(ctx), address_(address), request_(std::move(request)), resume_(resume) {}

  int Run(int concurrency, uint64_t measure_start, uint64_t measure_end);
  uint64_t completed() const { return completed_; }
  uint64_t resumed() const { return resumed_; }
  uint64_t errors() const { return errors_; }

 private:
  void Start(size_t index);
  void Advance(size_t index);
  void Finish(size_t index, bool ok);
  void Watch(size_t index, uint32_t events);

  SSL_CTX* const ctx_;
  const sockaddr_in address_;
  const std::string request_;
  const bool resume_;
  int epoll_fd_ = -1;
  std::vector<Slot> slots_;
  bool measuring_ = false;
  bool stopping_ = false;
  uint64_t completed_ = 0;
  uint64_t resumed_ = 0;
  uint64_t errors_ = 0;
  char buffer_[16384];
};

void Bench::Watch(size_t index, uint32_t events) {
  epoll_event event{events, {.u64 = index}};
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, slots_[index].fd, &event);
}

void Bench::Start(size_t index) {
  Slot& slot = slots_[index];
  slot.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  ::setsockopt(slot.fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  slot.phase = Phase::kConnecting;
  slot.request_sent = 0;
  slot.response.clear();
  int result = ::connect(slot.fd, reinterpret_cast<const sockaddr*>(&address_), sizeof(address_));
  epoll_event event{EPOLLOUT, {.u64 = index}};
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, slot.fd, &event);
  if (result != 0 && errno != EINPROGRESS) Finish(index, false);
}

void Bench::Finish(size_t index, bool ok) {
  Slot& slot = slots_[index];
  if (ok) {
    if (measuring_) {
      ++completed_;
      if (SSL_session_reused(slot.ssl)) ++resumed_;
    }
    if (resume_) {
      SSL_SESSION_free(slot.session);
      slot.session = SSL_get1_session(slot.ssl);
    }
    // close_notify, as a browser leaving does; not waited for.
    (void)SSL_shutdown(slot.ssl);
  } else {
    if (measuring_) ++errors_;
    ERR_clear_error();
  }
  SSL_free(slot.ssl);
  slot.ssl = nullptr;
  ::close(slot.fd);  // Also takes it out of the epoll set.
  slot.fd = -1;
  if (!stopping_) Start(index);
}

void Bench::Advance(size_t index) {
  Slot& slot = slots_[index];
  for (;;) {
    switch (slot.phase) {
      case Phase::kConnecting: {
        int error = 0;
        socklen_t length = sizeof(error);
        ::getsockopt(slot.fd, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) return Finish(index, false);
        slot.ssl = SSL_new(ctx_);
        SSL_set_fd(slot.ssl, slot.fd);
        SSL_set_tlsext_host_name(slot.ssl, "localhost");
        if (resume_ && slot.session != nullptr) SSL_set_session(slot.ssl, slot.session);
        slot.phase = Phase::kHandshake;
        continue;
      }
      case Phase::kHandshake: {
        int result = SSL_connect(slot.ssl);
        if (result != 1) {
          int error = SSL_get_error(slot.ssl, result);
          if (error == SSL_ERROR_WANT_READ) return Watch(index, EPOLLIN);
          if (error == SSL_ERROR_WANT_WRITE) return Watch(index, EPOLLOUT);
          return Finish(index, false);
        }
        slot.phase = Phase::kWriting;
        continue;
      }
      case Phase::kWriting: {
        size_t written = 0;
        int result = SSL_write_ex(slot.ssl, request_.data() + slot.request_sent,
                                  request_.size() - slot.request_sent, &written);
        if (result != 1) {
          int error = SSL_get_error(slot.ssl, result);
          if (error == SSL_ERROR_WANT_READ) return Watch(index, EPOLLIN);
          if (error == SSL_ERROR_WANT_WRITE) return Watch(index, EPOLLOUT);
          return Finish(index, false);
        }
        slot.request_sent += written;
        if (slot.request_sent == request_.size()) slot.phase = Phase::kReading;
        continue;
      }
      case Phase::kReading: {
        size_t got = 0;
        int result = SSL_read_ex(slot.ssl, buffer_, sizeof(buffer_), &got);
        if (result != 1) {
          int error = SSL_get_error(slot.ssl, result);
          if (error == SSL_ERROR_WANT_READ) return Watch(index, EPOLLIN);
          if (error == SSL_ERROR_WANT_WRITE) return Watch(index, EPOLLOUT);
          return Finish(index, false);
        }
        slot.response.append(buffer_, got);
        size_t head_end = slot.response.find("\r\n\r\n");
        if (head_end == std::string::npos) continue;
        size_t length_at = slot.response.find("Content-Length:");
        if (length_at == std::string::npos || length_at > head_end) {
          length_at = slot.response.find("content-length:");
        }
        size_t body = length_at != std::string::npos && length_at < head_end
                          ? std::strtoul(slot.response.c_str() + length_at + 15, nullptr, 10)
                          : 0;
        if (slot.response.size() < head_end + 4 + body) continue;
        bool ok = slot.response.compare(0, 12, "HTTP/1.1 200") == 0;
        return Finish(index, ok);
      }
    }
  }
}

int Bench::Run(int concurrency, uint64_t measure_start, uint64_t measure_end) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  slots_.resize(static_cast<size_t>(concurrency));
  for (size_t i = 0; i < slots_.size(); ++i) Start(i);
  epoll_event events[256];
  while (true) {
    uint64_t now = NowNs();
    if (!measuring_ && !stopping_ && now >= measure_start) measuring_ = true;
    if (measuring_ && now >= measure_end) {
      measuring_ = false;
      stopping_ = true;
      break;
    }
    int ready = ::epoll_wait(epoll_fd_, events, 256, 5);
    for (int i = 0; i < ready; ++i) Advance(events[i].data.u64);
  }
  for (Slot& slot : slots_) {
    SSL_free(slot.ssl);
    SSL_SESSION_free(slot.session);
    if (slot.fd >= 0) ::close(slot.fd);
  }
  ::close(epoll_fd_);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "TLS handshakes per second. Usage: tls_handshake_bench --addr=127.0.0.1:8443 "
      "--concurrency=32 --duration=10s [--resume]");
  absl::ParseCommandLine(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  std::string addr = absl::GetFlag(FLAGS_addr);
  size_t colon = addr.rfind(':');
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (colon == std::string::npos ||
      ::inet_pton(AF_INET, addr.substr(0, colon).c_str(), &address.sin_addr) != 1 ||
      absl::GetFlag(FLAGS_concurrency) <= 0) {
    std::fprintf(stderr, "error: --addr must be IPv4 host:port, --concurrency positive\n");
    return 2;
  }
  address.sin_port = htons(static_cast<uint16_t>(std::atoi(addr.c_str() + colon + 1)));

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  int version = absl::GetFlag(FLAGS_tls_version) == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
  SSL_CTX_set_min_proto_version(ctx, version);
  SSL_CTX_set_max_proto_version(ctx, version);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  // Sessions kept by the slots, not in the context's store.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);

  std::string request = "GET " + absl::GetFlag(FLAGS_path) +
                        " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: tls_handshake_bench\r\n\r\n";
  Bench bench(ctx, address, request, absl::GetFlag(FLAGS_resume));
  uint64_t start = NowNs();
  uint64_t measure_start =
      start + static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_warmup)));
  double duration_s = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_duration));
  uint64_t measure_end = measure_start + static_cast<uint64_t>(duration_s * 1e9);
  bench.Run(absl::GetFlag(FLAGS_concurrency), measure_start, measure_end);
  SSL_CTX_free(ctx);

  double rate = static_cast<double>(bench.completed()) / duration_s;
  double resumed = bench.completed() > 0 ? static_cast<double>(bench.resumed()) /
                                               static_cast<double>(bench.completed())
                                         : 0;
  if (absl::GetFlag(FLAGS_brief)) {
    std::printf("%llu %.1f %.3f %llu\n", static_cast<unsigned long long>(bench.completed()), rate,
                resumed, static_cast<unsigned long long>(bench.errors()));
  } else {
    std::printf("%llu connections in %.1f s: %.0f handshakes/s, %.1f%% resumed, %llu errors\n",
                static_cast<unsigned long long>(bench.completed()), duration_s, rate,
                resumed * 100, static_cast<unsigned long long>(bench.errors()));
  }
  return bench.errors() == 0 && bench.completed() > 0 ? 0 : 1;
}
