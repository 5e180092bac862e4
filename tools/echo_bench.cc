// echo_bench: a load generator for any echo server, verifying every echoed byte.
//
//   tools/bazel run --config=opt //tools:echo_bench -- --addr=127.0.0.1:1833
//       --connections=50 --size=512 --duration=10s --mode=pingpong     (one line)
//
// Modes:
//   pingpong  each connection sends one --size message, waits for all of its echo, repeats.
//   stream    up to --window messages in flight per connection.
//   flood     writes --message (default "PING\r\n") as fast as the socket takes it and counts
//             the echoed bytes (evio's and gev's tcpkali method: 50 connections, 6 B, 10 s).
//
// Bytes sent differ per connection and per position in the stream, and each echoed byte is
// compared with what was sent at that position; mismatches, short or extra bytes and
// connection errors are counted and make the exit status 1. Reports messages/s, MiB/s (echoed)
// and, for pingpong and stream, latency percentiles, as text or one JSON line (--json). Runs
// longer than 3 s show a one-line progress display when stderr is a terminal.
//
// Threads (--threads) each run their own epoll loop over a share of the connections.
//
// --tls speaks TLS (1.3 unless --tls_version=1.2; the certificate is not checked: a benchmark
// of the record layer, not of trust), each handshake done before the clock starts.

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "net/inet_address.h"
#include "net/socket_ops.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:1833", "echo server address");
ABSL_FLAG(int, connections, 50, "connections");
ABSL_FLAG(int, size, 512, "message size in bytes (pingpong, stream)");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "measured time");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "time before measuring");
ABSL_FLAG(int, threads, 1, "client threads");
ABSL_FLAG(std::string, mode, "pingpong", "pingpong, stream or flood");
ABSL_FLAG(int, window, 16, "messages in flight per connection (stream)");
ABSL_FLAG(std::string, message, "PING\r\n", "the message flood mode repeats");
ABSL_FLAG(bool, json, false, "print one JSON line instead of text");
ABSL_FLAG(bool, tls, false, "speak TLS to the server");
ABSL_FLAG(std::string, tls_version, "1.3", "with --tls: 1.3 or 1.2");

namespace {

using Clock = std::chrono::steady_clock;

enum class Mode { kPingPong, kStream, kFlood };

uint64_t NowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

// Log-linear latency histogram in nanoseconds, about 3 % precision.
class Histogram {
 public:
  void Record(uint64_t ns) {
    ++counts_[Index(ns)];
    ++total_;
    max_ = std::max(max_, ns);
  }
  void Merge(const Histogram& other) {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    max_ = std::max(max_, other.max_);
  }
  uint64_t total() const { return total_; }
  uint64_t max() const { return max_; }
  uint64_t Percentile(double p) const {
    if (total_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(total_ - 1)) + 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(Value(i), max_);
    }
    return max_;
  }

 private:
  static constexpr int kSubBits = 5;
  static size_t Index(uint64_t v) {
    if (v < 64) return static_cast<size_t>(v);
    int msb = 63 - __builtin_clzll(v);
    uint64_t sub = (v >> (msb - kSubBits)) & ((1u << kSubBits) - 1);
    return 64 + static_cast<size_t>(msb - 6) * (1u << kSubBits) + static_cast<size_t>(sub);
  }
  // The upper edge of bucket i.
  static uint64_t Value(size_t i) {
    if (i < 64) return i;
    size_t msb = (i - 64) / (1u << kSubBits) + 6;
    uint64_t sub = (i - 64) % (1u << kSubBits);
    return ((uint64_t{1} << kSubBits | sub) + 1) << (msb - kSubBits);
  }
  std::array<uint64_t, 64 + 58 * 32> counts_{};
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

// The bytes a connection sends: position `offset` of its stream is data[(offset + shift) %
// period]; data holds two periods so any run up to `period` bytes is contiguous.
struct Pattern {
  std::string data;
  size_t period = 0;

  const char* At(uint64_t offset, uint64_t shift) const {
    return data.data() + (offset + shift) % period;
  }
};

Pattern RandomPattern() {
  Pattern pattern;
  pattern.period = 1048573;  // A prime: connections' shifts never line up.
  std::string once(pattern.period, '\0');
  std::mt19937_64 random(2026);
  for (char& c : once) c = static_cast<char>(random());
  pattern.data = once + once;
  return pattern;
}

Pattern RepeatedPattern(const std::string& message) {
  Pattern pattern;
  std::string once;
  while (once.size() < 64 * 1024) once += message;
  pattern.period = once.size();
  pattern.data = once + once;
  return pattern;
}

struct Counters {
  uint64_t messages = 0;
  uint64_t bytes = 0;
};

struct Conn {
  int fd = -1;
  uint64_t shift = 0;
  uint64_t sent = 0;         // Bytes written.
  uint64_t received = 0;     // Bytes echoed and verified.
  uint64_t messages_sent = 0;      // Messages whose first byte was written.
  uint64_t messages_received = 0;
  std::vector<uint64_t> send_times;  // Ring of `window` message start times.
  bool failed = false;
  SSL* ssl = nullptr;        // With --tls.
  size_t retry_write = 0;    // A TLS write to repeat with the same length (OpenSSL's rule).
  uint64_t last_echo_ns = 0;  // When echoed bytes last arrived: tells a stall from slowness.
};

struct Options {
  Mode mode = Mode::kPingPong;
  size_t size = 512;
  size_t window = 1;
  const Pattern* pattern = nullptr;
  uint64_t measure_start_ns = 0;
  uint64_t measure_end_ns = 0;
};

struct Totals {
  Counters at_start;  // Counters when measuring began...
  Counters at_end;    // ...and ended.
  Histogram latency;
  uint64_t errors = 0;
  uint64_t mismatches = 0;
  uint64_t short_bytes = 0;
  uint64_t extra_bytes = 0;
  uint64_t connect_failures = 0;
};

class Worker {
 public:
  Worker(const Options& options, std::vector<Conn> conns)
      : options_(options), conns_(std::move(conns)) {}

  void Run();
  const Totals& totals() const { return totals_; }
  uint64_t live_messages() const { return live_messages_.load(std::memory_order_relaxed); }

 private:
  void Fail(Conn& conn, uint64_t* counter) {
    ++*counter;
    conn.failed = true;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn.fd, nullptr);
  }
  void ReadAll(Conn& conn, uint64_t now);
  void WriteAll(Conn& conn, uint64_t now);
  // Bytes this connection may still write now.
  uint64_t Allowed(const Conn& conn) const;

  const Options options_;
  std::vector<Conn> conns_;
  Totals totals_;
  Counters counters_;
  bool sending_ = true;
  bool measuring_ = false;
  int epoll_fd_ = -1;
  std::atomic<uint64_t> live_messages_{0};
  std::unique_ptr<char[]> buffer_{new char[256 * 1024]};
};

uint64_t Worker::Allowed(const Conn& conn) const {
  if (!sending_ || conn.failed) return 0;
  switch (options_.mode) {
    case Mode::kFlood:
      return UINT64_MAX;
    case Mode::kPingPong:
    case Mode::kStream: {
      // Up to `window` whole messages beyond the last one echoed back.
      uint64_t end = (conn.messages_received + options_.window) * options_.size;
      return end > conn.sent ? end - conn.sent : 0;
    }
  }
  return 0;
}

void Worker::WriteAll(Conn& conn, uint64_t now) {
  while (true) {
    uint64_t allowed = Allowed(conn);
    if (allowed == 0) return;
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(allowed, 64 * 1024));
    ssize_t n;
    if (conn.ssl != nullptr) {
      if (conn.retry_write != 0) chunk = conn.retry_write;
      size_t written = 0;
      if (SSL_write_ex(conn.ssl, options_.pattern->At(conn.sent, conn.shift), chunk, &written) !=
          1) {
        int error = SSL_get_error(conn.ssl, 0);
        if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
          conn.retry_write = chunk;
          return;
        }
        Fail(conn, &totals_.errors);
        return;
      }
      conn.retry_write = 0;
      n = static_cast<ssize_t>(written);
    } else {
      n = ::write(conn.fd, options_.pattern->At(conn.sent, conn.shift), chunk);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        Fail(conn, &totals_.errors);
        return;
      }
    }
    conn.sent += static_cast<uint64_t>(n);
    // Every message whose first byte went out in this write started now (one write may start
    // several small ones); Allowed() keeps at most `window` of them unanswered, so their slots
    // in the ring are free.
    while (options_.mode != Mode::kFlood && conn.messages_sent * options_.size < conn.sent) {
      conn.send_times[conn.messages_sent % options_.window] = now;
      ++conn.messages_sent;
    }
    if (static_cast<size_t>(n) < chunk) return;
  }
}

void Worker::ReadAll(Conn& conn, uint64_t now) {
  while (!conn.failed) {
    ssize_t n;
    if (conn.ssl != nullptr) {
      size_t got = 0;
      if (SSL_read_ex(conn.ssl, buffer_.get(), 256 * 1024, &got) == 1) {
        n = static_cast<ssize_t>(got);
      } else {
        int error = SSL_get_error(conn.ssl, 0);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return;
        n = -1;
      }
    } else {
      n = ::read(conn.fd, buffer_.get(), 256 * 1024);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
    }
    if (n <= 0) {
      Fail(conn, &totals_.errors);  // The server closed or reset the connection.
      return;
    }
    uint64_t got = static_cast<uint64_t>(n);
    if (conn.received + got > conn.sent) {
      totals_.extra_bytes += conn.received + got - conn.sent;
      Fail(conn, &totals_.errors);
      return;
    }
    // Compare in runs that stay inside one period of the pattern.
    uint64_t checked = 0;
    while (checked < got) {
      uint64_t offset = conn.received + checked;
      uint64_t run = std::min<uint64_t>(got - checked, options_.pattern->period);
      if (std::memcmp(buffer_.get() + checked, options_.pattern->At(offset, conn.shift), run) !=
          0) {
        Fail(conn, &totals_.mismatches);
        return;
      }
      checked += run;
    }
    conn.received += got;
    conn.last_echo_ns = now;
    counters_.bytes += got;
    if (options_.mode == Mode::kFlood) continue;  // Messages: echoed bytes / message size.
    while (conn.received >= (conn.messages_received + 1) * options_.size) {
      uint64_t started = conn.send_times[conn.messages_received % options_.window];
      if (measuring_) totals_.latency.Record(now - started);
      ++conn.messages_received;
      ++counters_.messages;
    }
  }
}

void Worker::Run() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  for (size_t i = 0; i < conns_.size(); ++i) {
    epoll_event event{EPOLLIN | EPOLLOUT | EPOLLET, {.u64 = i}};
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, conns_[i].fd, &event);
  }
  // Echoes still owed when sending stops get this long: on loopback they take milliseconds,
  // but a sanitizer build of the server on a machine busy with other tests can be far slower.
  const uint64_t drain_deadline = options_.measure_end_ns + 5'000'000'000ull;
  epoll_event events[512];
  while (true) {
    uint64_t now = NowNs();
    if (!measuring_ && sending_ && now >= options_.measure_start_ns) {
      measuring_ = true;
      totals_.at_start = counters_;
    }
    if (sending_ && now >= options_.measure_end_ns) {
      sending_ = false;
      measuring_ = false;
      totals_.at_end = counters_;
    }
    if (!sending_) {
      bool drained = std::all_of(conns_.begin(), conns_.end(), [](const Conn& c) {
        return c.failed || c.received == c.sent;
      });
      if (drained || now >= drain_deadline) break;
    }
    int ready = ::epoll_wait(epoll_fd_, events, 512, 5);
    now = NowNs();
    for (int i = 0; i < ready; ++i) {
      Conn& conn = conns_[events[i].data.u64];
      if (conn.failed) continue;
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ReadAll(conn, now);
      if (!conn.failed) WriteAll(conn, now);
    }
    live_messages_.store(options_.mode == Mode::kFlood ? counters_.bytes : counters_.messages,
                         std::memory_order_relaxed);
  }
  for (Conn& conn : conns_) {
    if (!conn.failed && conn.received < conn.sent) {
      totals_.short_bytes += conn.sent - conn.received;
      // Which connection, and whether its echoes had stopped or were still coming.
      uint64_t end = NowNs();
      std::fprintf(stderr,
                   "short: fd %d sent %llu, echoed %llu; last echo %.0f ms before the end\n",
                   conn.fd, static_cast<unsigned long long>(conn.sent),
                   static_cast<unsigned long long>(conn.received),
                   conn.last_echo_ns == 0 ? -1.0 : static_cast<double>(end - conn.last_echo_ns) / 1e6);
    }
    SSL_free(conn.ssl);
    ::close(conn.fd);
  }
  ::close(epoll_fd_);
}

// A TLS handshake on the non-blocking `fd`, waiting at most 10 s; null on failure.
SSL* HandshakeTls(SSL_CTX* ctx, int fd) {
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  for (int waited_ms = 0; waited_ms < 10000;) {
    int result = SSL_connect(ssl);
    if (result == 1) return ssl;
    int error = SSL_get_error(ssl, result);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) break;
    pollfd wait{fd, static_cast<short>(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
    ::poll(&wait, 1, 100);
    waited_ms += 100;
  }
  ERR_print_errors_fp(stderr);
  SSL_free(ssl);
  return nullptr;
}

absl::StatusOr<Mode> ParseMode(const std::string& name) {
  if (name == "pingpong") return Mode::kPingPong;
  if (name == "stream") return Mode::kStream;
  if (name == "flood") return Mode::kFlood;
  return absl::InvalidArgumentError("--mode must be pingpong, stream or flood");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Load generator for echo servers. Usage: echo_bench --addr=127.0.0.1:1833 "
      "--connections=50 --size=512 --duration=10s --mode=pingpong|stream|flood");
  absl::ParseCommandLine(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  absl::StatusOr<Mode> mode = ParseMode(absl::GetFlag(FLAGS_mode));
  absl::StatusOr<gev::InetAddress> address = gev::InetAddress::Parse(absl::GetFlag(FLAGS_addr));
  const int connections = absl::GetFlag(FLAGS_connections);
  const int threads = std::max(1, std::min(absl::GetFlag(FLAGS_threads), connections));
  if (!mode.ok() || !address.ok() || connections <= 0 || absl::GetFlag(FLAGS_size) <= 0 ||
      absl::GetFlag(FLAGS_message).empty()) {
    std::fprintf(stderr, "error: %s\n",
                 !mode.ok()      ? mode.status().ToString().c_str()
                 : !address.ok() ? address.status().ToString().c_str()
                                 : "--connections, --size and --message must be positive");
    return 2;
  }
  (void)gev::sockets::RaiseOpenFileLimit();  // Best effort: connects fail visibly if short.

  static const Pattern pattern = *mode == Mode::kFlood
                                     ? RepeatedPattern(absl::GetFlag(FLAGS_message))
                                     : RandomPattern();
  Options options;
  options.mode = *mode;
  options.size = *mode == Mode::kFlood ? absl::GetFlag(FLAGS_message).size()
                                       : static_cast<size_t>(absl::GetFlag(FLAGS_size));
  options.window = *mode == Mode::kStream ? std::max(1, absl::GetFlag(FLAGS_window)) : 1;
  options.pattern = &pattern;

  SSL_CTX* tls = nullptr;
  if (absl::GetFlag(FLAGS_tls)) {
    tls = SSL_CTX_new(TLS_client_method());
    int version = absl::GetFlag(FLAGS_tls_version) == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(tls, version);
    SSL_CTX_set_max_proto_version(tls, version);
    SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_mode(tls, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  }

  // Connect (and shake hands) before the clock starts.
  std::vector<std::vector<Conn>> shares(static_cast<size_t>(threads));
  uint64_t connect_failures = 0;
  for (int i = 0; i < connections; ++i) {
    absl::StatusOr<int> fd = gev::sockets::ConnectBlocking(*address);
    if (!fd.ok()) {
      if (connect_failures++ == 0) std::fprintf(stderr, "connect: %s\n", fd.status().ToString().c_str());
      continue;
    }
    int on = 1;
    ::setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    Conn conn;
    conn.fd = *fd;
    if (tls != nullptr) {
      conn.ssl = HandshakeTls(tls, *fd);
      if (conn.ssl == nullptr) {
        if (connect_failures++ == 0) std::fprintf(stderr, "TLS handshake failed\n");
        ::close(*fd);
        continue;
      }
    }
    conn.shift = *mode == Mode::kFlood ? 0 : static_cast<uint64_t>(i) * 7919 * 131;
    conn.send_times.assign(options.window, 0);
    shares[static_cast<size_t>(i % threads)].push_back(std::move(conn));
  }
  const double duration_s = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_duration));
  uint64_t start = NowNs();
  options.measure_start_ns =
      start + static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_warmup)));
  options.measure_end_ns =
      options.measure_start_ns + static_cast<uint64_t>(duration_s * 1e9);

  std::vector<std::unique_ptr<Worker>> workers;
  for (auto& share : shares) workers.push_back(std::make_unique<Worker>(options, std::move(share)));
  std::vector<std::thread> running;
  for (auto& worker : workers) running.emplace_back([&worker] { worker->Run(); });

  const bool progress = ::isatty(STDERR_FILENO) && duration_s > 3;
  if (progress) {
    uint64_t last = 0;
    while (NowNs() < options.measure_end_ns) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      uint64_t total = 0;
      for (auto& worker : workers) total += worker->live_messages();
      double elapsed = static_cast<double>(NowNs() - start) / 1e9;
      std::fprintf(stderr, "\r%5.1f s  %12.0f %s/s   ", elapsed, static_cast<double>(total - last),
                   *mode == Mode::kFlood ? "bytes" : "msg");
      last = total;
    }
    std::fprintf(stderr, "\r%60s\r", "");
  }
  for (auto& thread : running) thread.join();
  SSL_CTX_free(tls);  // The workers freed their connections' SSLs as they ended.

  Totals sum;
  sum.connect_failures = connect_failures;
  for (auto& worker : workers) {
    const Totals& t = worker->totals();
    sum.at_start.messages += t.at_start.messages;
    sum.at_start.bytes += t.at_start.bytes;
    sum.at_end.messages += t.at_end.messages;
    sum.at_end.bytes += t.at_end.bytes;
    sum.latency.Merge(t.latency);
    sum.errors += t.errors;
    sum.mismatches += t.mismatches;
    sum.short_bytes += t.short_bytes;
    sum.extra_bytes += t.extra_bytes;
  }
  uint64_t bytes = sum.at_end.bytes - sum.at_start.bytes;
  uint64_t messages = *mode == Mode::kFlood ? bytes / options.size
                                            : sum.at_end.messages - sum.at_start.messages;
  double msgs_per_s = static_cast<double>(messages) / duration_s;
  double mib_per_s = static_cast<double>(bytes) / duration_s / (1024.0 * 1024.0);
  auto us = [&](double p) { return static_cast<double>(sum.latency.Percentile(p)) / 1000.0; };
  bool ok = sum.errors == 0 && sum.mismatches == 0 && sum.short_bytes == 0 &&
            sum.extra_bytes == 0 && connect_failures == 0;
  const std::string& mode_name = absl::GetFlag(FLAGS_mode);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"mode\":\"%s\",\"connections\":%d,\"size\":%zu,\"window\":%zu,\"duration_s\":%.3f,"
        "\"messages\":%llu,\"msgs_per_s\":%.1f,\"bytes_per_s\":%.1f,\"mib_per_s\":%.3f,"
        "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
        "\"errors\":%llu,\"mismatches\":%llu,\"short_bytes\":%llu,\"extra_bytes\":%llu,"
        "\"connect_failures\":%llu,\"ok\":%s}\n",
        mode_name.c_str(), connections, options.size, options.window, duration_s,
        static_cast<unsigned long long>(messages), msgs_per_s, static_cast<double>(bytes) / duration_s,
        mib_per_s, us(50), us(90), us(99), us(99.9),
        static_cast<double>(sum.latency.max()) / 1000.0,
        static_cast<unsigned long long>(sum.errors), static_cast<unsigned long long>(sum.mismatches),
        static_cast<unsigned long long>(sum.short_bytes),
        static_cast<unsigned long long>(sum.extra_bytes),
        static_cast<unsigned long long>(connect_failures), ok ? "true" : "false");
  } else {
    std::printf("%s: %d connections, %zu-byte messages, %.1f s\n", mode_name.c_str(), connections,
                options.size, duration_s);
    std::printf("  %.0f messages/s, %.2f MiB/s echoed\n", msgs_per_s, mib_per_s);
    if (*mode != Mode::kFlood) {
      std::printf("  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", us(50),
                  us(90), us(99), us(99.9), static_cast<double>(sum.latency.max()) / 1000.0);
    }
    std::printf("  errors %llu, mismatches %llu, short bytes %llu, extra bytes %llu, failed "
                "connects %llu\n",
                static_cast<unsigned long long>(sum.errors),
                static_cast<unsigned long long>(sum.mismatches),
                static_cast<unsigned long long>(sum.short_bytes),
                static_cast<unsigned long long>(sum.extra_bytes),
                static_cast<unsigned long long>(connect_failures));
  }
  return ok ? 0 : 1;
}
