// ws_bench: a WebSocket load generator for any server, verifying every byte it gets back.
//
//   tools/bazel run --config=opt //tools:ws_bench -- --addr=127.0.0.1:8080 --mode=echo
//       --connections=100 --size=512 --duration=5s [--server_pid=PID] [--json]
//
// Modes:
//   echo       each connection sends a binary message of --size bytes (masked, as a client
//              must), waits for all of its echo, and repeats; --window messages in flight per
//              connection (1: ping-pong).
//   broadcast  --connections subscribers and one publisher open --path (a server that sends
//              every text message it gets to every socket on that path, the sender too: the
//              chat example's /chat). The publisher sends text messages of --size bytes while
//              fewer than --window of them have not yet reached every socket; a delivery is
//              one message reaching one socket.
//
// Every connection does its upgrade (RFC 6455: the Sec-WebSocket-Accept checked) before the
// clock starts, at most --connect_concurrency at a time. Every message's bytes depend on the
// connection and its sequence number, and each one received is compared whole with what was
// sent (echo) or published (broadcast), in order; a mismatch, a message out of order, a close
// or a reset counts as an error and makes the exit status 1, as does a connection that waits
// --stall_timeout for a message that does not come. Server frames must be unmasked with RSV bits clear; fragmented messages are
// put together, pings answered.
//
// With --server_pid, the server's CPU time (utime + stime of all its threads, from
// /proc/PID/stat) over the timed window is reported per message or delivery, and as a share of
// one CPU: a share near 100 % means the server bounded the rate; the client's own share (from
// getrusage) says whether it did. One thread runs one epoll loop over all the connections; it
// raises its descriptor limit to the hard limit.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tools/bench_clock.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:8080", "server address, IPv4 host:port");
ABSL_FLAG(std::string, path, "", "request target (default / for echo, /chat for broadcast)");
ABSL_FLAG(std::string, mode, "echo", "echo or broadcast");
ABSL_FLAG(int, connections, 100, "echo: connections; broadcast: subscribers");
ABSL_FLAG(int, size, 512, "message size in bytes");
ABSL_FLAG(int, window, 1, "echo: messages in flight per connection; broadcast: in flight");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "measured time");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "time after setup before measuring");
ABSL_FLAG(absl::Duration, setup_timeout, absl::Seconds(60), "limit on connecting everyone");
ABSL_FLAG(absl::Duration, stall_timeout, absl::Seconds(2), "no message for this long fails");
ABSL_FLAG(int, connect_concurrency, 128, "connections being set up at once");
ABSL_FLAG(int, server_pid, 0, "the server's process, for its CPU time per message");
ABSL_FLAG(bool, json, false, "print one JSON line instead of text");

namespace {

using gev::bench::NowNs;
using gev::bench::OwnCpuNs;
using gev::bench::ProcessCpuTicks;

// Printable bytes (valid UTF-8 for text messages), repeated past one period by a message's
// size so that every message is contiguous: message `seq` of connection `id` is
// data[(id * 7919 + seq * 131) % period...].
struct Pattern {
  static constexpr size_t kPeriod = 65521;  // A prime: shifts rarely line up.
  std::string data;
  explicit Pattern(size_t message_size) {
    std::string once(kPeriod, '\0');
    std::mt19937 random(2026);
    for (char& c : once) c = static_cast<char>('!' + random() % 94);
    while (data.size() < kPeriod + message_size) data += once;
  }
  const char* Message(uint64_t id, uint64_t seq) const {
    return data.data() + (id * 7919 + seq * 131) % kPeriod;
  }
};

enum class State { kConnecting, kUpgrading, kOpen, kFailed };

struct Conn {
  int fd = -1;
  uint64_t id = 0;
  State state = State::kConnecting;
  std::string expected_accept;
  std::string out;  // Bytes not yet written, from out_at.
  size_t out_at = 0;
  bool polling_out = false;
  std::string in;  // Bytes not yet parsed, from in_at.
  size_t in_at = 0;
  uint64_t sent = 0;      // Messages queued.
  uint64_t received = 0;  // Messages received whole and verified.
  uint64_t last_progress_ns = 0;  // When it last received a message (or opened).
  size_t message_at = 0;  // Bytes of the current (fragmented) message verified so far.
  bool in_message = false;
};

struct Stats {
  uint64_t messages = 0;  // Echoes or deliveries, verified.
  uint64_t errors = 0;
  uint64_t mismatches = 0;
};

class Bench {
 public:
  Bench(bool broadcast, sockaddr_in address, std::string path, size_t size, size_t window)
      : broadcast_(broadcast), address_(address), path_(std::move(path)), size_(size),
        window_(window), pattern_(size), random_(NowNs()) {}

  bool Run(size_t connections, absl::Duration warmup, absl::Duration duration,
           absl::Duration setup_timeout, absl::Duration stall, size_t concurrency,
           int server_pid);

 private:
  void Fail(Conn& conn, const char* why) {
    if (conn.state == State::kFailed) return;
    if (stats_.errors < 5) fprintf(stderr, "ws_bench: connection %llu: %s\n",
                                   static_cast<unsigned long long>(conn.id), why);
    ++stats_.errors;
    if (conn.state != State::kOpen) ++setup_done_;
    conn.state = State::kFailed;
    epoll_ctl(epoll_, EPOLL_CTL_DEL, conn.fd, nullptr);
    close(conn.fd);
  }
  void StartConnect(Conn& conn);
  void OnEvent(Conn& conn, uint32_t events);
  void Flush(Conn& conn);
  void ReadUpgrade(Conn& conn);
  void ReadFrames(Conn& conn);
  void OnMessage(Conn& conn);
  void SendFrame(Conn& conn, int opcode, const char* payload, size_t length);
  void SendNextEcho(Conn& conn) {
    SendFrame(conn, 2, pattern_.Message(conn.id, conn.sent), size_);
    ++conn.sent;
  }
  void Publish();
  // The bytes message `seq` of `conn` must carry, compared from `offset` for `length`.
  bool Matches(const Conn& conn, uint64_t seq, size_t offset, const char* bytes, size_t length);

  const bool broadcast_;
  const sockaddr_in address_;
  const std::string path_;
  const size_t size_;
  const size_t window_;
  Pattern pattern_;
  std::mt19937_64 random_;
  int epoll_ = -1;
  std::vector<Conn> conns_;
  size_t setup_done_ = 0;
  Stats stats_;
  // Broadcast: the publisher is the last connection; reached_[seq % ring] counts the sockets
  // message seq has reached, and every message before `delivered_` has reached all of them.
  std::vector<uint32_t> reached_;
  uint64_t published_ = 0;
  uint64_t delivered_ = 0;
  uint64_t now_ns_ = 0;  // The clock as of the last poll, for the stall checks.
};

void Bench::StartConnect(Conn& conn) {
  conn.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (conn.fd < 0) {
    perror("ws_bench: socket");
    exit(1);
  }
  int one = 1;
  setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = connect(conn.fd, reinterpret_cast<const sockaddr*>(&address_), sizeof address_);
  if (rc < 0 && errno != EINPROGRESS) {
    Fail(conn, strerror(errno));
    return;
  }
  unsigned char key[16];
  for (unsigned char& b : key) b = static_cast<unsigned char>(random_());
  std::string key64 = absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(key), sizeof key));
  std::string accept_input = key64 + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(accept_input.data()), accept_input.size(), digest);
  conn.expected_accept =
      absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
  char host[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &address_.sin_addr, host, sizeof host);
  conn.out = absl::StrFormat(
      "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
      path_, host, ntohs(address_.sin_port), key64);
  conn.state = State::kUpgrading;
  epoll_event event{};
  event.events = EPOLLIN | EPOLLOUT;
  event.data.u64 = conn.id;
  conn.polling_out = true;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, conn.fd, &event);
}

void Bench::SendFrame(Conn& conn, int opcode, const char* payload, size_t length) {
  char header[14];
  size_t n = 0;
  header[n++] = static_cast<char>(0x80 | opcode);
  if (length < 126) {
    header[n++] = static_cast<char>(0x80 | length);
  } else if (length < 65536) {
    header[n++] = static_cast<char>(0x80 | 126);
    header[n++] = static_cast<char>(length >> 8);
    header[n++] = static_cast<char>(length);
  } else {
    header[n++] = static_cast<char>(0x80 | 127);
    for (int shift = 56; shift >= 0; shift -= 8) header[n++] = static_cast<char>(length >> shift);
  }
  uint32_t mask_key = static_cast<uint32_t>(random_());
  unsigned char mask[4];
  memcpy(mask, &mask_key, 4);
  memcpy(header + n, mask, 4);
  n += 4;
  if (conn.out_at == conn.out.size()) {
    conn.out.clear();
    conn.out_at = 0;
  }
  conn.out.append(header, n);
  size_t start = conn.out.size();
  conn.out.resize(start + length);
  char* masked = conn.out.data() + start;
  uint64_t mask8;
  for (int i = 0; i < 8; ++i) reinterpret_cast<unsigned char*>(&mask8)[i] = mask[i % 4];
  size_t i = 0;
  for (; i + 8 <= length; i += 8) {
    uint64_t word;
    memcpy(&word, payload + i, 8);
    word ^= mask8;
    memcpy(masked + i, &word, 8);
  }
  for (; i < length; ++i) masked[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
  Flush(conn);
}

void Bench::Flush(Conn& conn) {
  while (conn.out_at < conn.out.size()) {
    ssize_t n = send(conn.fd, conn.out.data() + conn.out_at, conn.out.size() - conn.out_at,
                     MSG_NOSIGNAL);
    if (n > 0) {
      conn.out_at += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    Fail(conn, n < 0 ? strerror(errno) : "send returned 0");
    return;
  }
  bool want_out = conn.out_at < conn.out.size();
  if (want_out != conn.polling_out) {
    epoll_event event{};
    event.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
    event.data.u64 = conn.id;
    epoll_ctl(epoll_, EPOLL_CTL_MOD, conn.fd, &event);
    conn.polling_out = want_out;
  }
}

void Bench::OnEvent(Conn& conn, uint32_t events) {
  if (events & EPOLLOUT) Flush(conn);
  if (conn.state == State::kFailed) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    // Compact before reading so the buffer holds at most one partial frame plus a read.
    if (conn.in_at > 0) {
      conn.in.erase(0, conn.in_at);
      conn.in_at = 0;
    }
    size_t have = conn.in.size();
    conn.in.resize(have + 65536);
    ssize_t n = recv(conn.fd, conn.in.data() + have, 65536, 0);
    if (n <= 0) {
      conn.in.resize(have);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      Fail(conn, n == 0 ? "the server closed the connection" : strerror(errno));
      return;
    }
    conn.in.resize(have + static_cast<size_t>(n));
    if (conn.state == State::kUpgrading) ReadUpgrade(conn);
    if (conn.state == State::kOpen) ReadFrames(conn);
  }
}

void Bench::ReadUpgrade(Conn& conn) {
  size_t end = conn.in.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (conn.in.size() > 16384) Fail(conn, "an upgrade response past 16 KiB");
    return;
  }
  absl::string_view head(conn.in.data(), end + 2);
  if (!absl::StartsWith(head, "HTTP/1.1 101")) {
    Fail(conn, "the upgrade was refused");
    return;
  }
  bool accepted = false;
  size_t at = head.find("\r\n") + 2;
  while (at < head.size()) {
    size_t line_end = head.find("\r\n", at);
    absl::string_view line = head.substr(at, line_end - at);
    at = line_end + 2;
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(line.substr(0, colon), "sec-websocket-accept")) {
      accepted = absl::StripAsciiWhitespace(line.substr(colon + 1)) == conn.expected_accept;
    }
  }
  if (!accepted) {
    Fail(conn, "a wrong or missing Sec-WebSocket-Accept");
    return;
  }
  conn.in_at = end + 4;
  conn.state = State::kOpen;
  ++setup_done_;
}

bool Bench::Matches(const Conn& conn, uint64_t seq, size_t offset, const char* bytes,
                    size_t length) {
  if (offset + length > size_) return false;
  if (!broadcast_) return memcmp(bytes, pattern_.Message(conn.id, seq) + offset, length) == 0;
  // Published message seq: its number in 20 digits, then the publisher's pattern.
  const char* body = pattern_.Message(0, seq);
  char number[21];
  snprintf(number, sizeof number, "%020llu", static_cast<unsigned long long>(seq));
  for (size_t i = 0; i < length; ++i) {
    size_t position = offset + i;
    char want = position < 20 && position < size_ ? number[position] : body[position];
    if (bytes[i] != want) return false;
  }
  return true;
}

void Bench::ReadFrames(Conn& conn) {
  while (conn.state == State::kOpen) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(conn.in.data()) + conn.in_at;
    size_t available = conn.in.size() - conn.in_at;
    if (available < 2) return;
    bool fin = p[0] & 0x80;
    int opcode = p[0] & 0x0f;
    if (p[0] & 0x70) return Fail(conn, "RSV bits set without an extension");
    if (p[1] & 0x80) return Fail(conn, "a masked server frame");
    uint64_t length = p[1] & 0x7f;
    size_t header = 2;
    if (length == 126) {
      if (available < 4) return;
      length = (uint64_t{p[2]} << 8) | p[3];
      header = 4;
    } else if (length == 127) {
      if (available < 10) return;
      length = 0;
      for (int i = 2; i < 10; ++i) length = (length << 8) | p[i];
      header = 10;
    }
    if (length > size_ + 1024) return Fail(conn, "a frame longer than any message sent");
    if (available < header + length) return;
    const char* payload = reinterpret_cast<const char*>(p) + header;
    conn.in_at += header + static_cast<size_t>(length);
    if (opcode == 9) {  // Ping: answered, as the server may expect.
      SendFrame(conn, 10, payload, static_cast<size_t>(length));
      continue;
    }
    if (opcode == 10) continue;
    if (opcode == 8) return Fail(conn, "the server sent a close frame");
    bool continuation = opcode == 0;
    if (continuation != conn.in_message) return Fail(conn, "a fragment out of place");
    if (!continuation && opcode != (broadcast_ ? 1 : 2)) return Fail(conn, "a wrong opcode");
    if (!Matches(conn, conn.received, conn.message_at, payload, static_cast<size_t>(length))) {
      ++stats_.mismatches;
      return Fail(conn, "a message unlike the one sent, or out of order");
    }
    conn.message_at += static_cast<size_t>(length);
    conn.in_message = !fin;
    if (!fin) continue;
    if (conn.message_at != size_) return Fail(conn, "a message shorter than the one sent");
    conn.message_at = 0;
    OnMessage(conn);
  }
}

void Bench::OnMessage(Conn& conn) {
  ++conn.received;
  ++stats_.messages;
  conn.last_progress_ns = now_ns_;
  if (!broadcast_) {
    if (conn.received > conn.sent) return Fail(conn, "an echo of a message not sent");
    SendNextEcho(conn);
    return;
  }
  uint64_t seq = conn.received - 1;
  if (seq >= published_) return Fail(conn, "a message not yet published");
  if (++reached_[seq % reached_.size()] == conns_.size()) {
    // Messages reach each socket in order, so the oldest completes first.
    while (delivered_ < published_ && reached_[delivered_ % reached_.size()] == conns_.size()) {
      reached_[delivered_ % reached_.size()] = 0;
      ++delivered_;
    }
    Publish();
  }
}

void Bench::Publish() {
  Conn& publisher = conns_.back();
  std::string message;
  while (publisher.state == State::kOpen && published_ < delivered_ + window_) {
    message.assign(pattern_.Message(0, published_), size_);
    char number[21];
    snprintf(number, sizeof number, "%020llu", static_cast<unsigned long long>(published_));
    memcpy(message.data(), number, std::min<size_t>(20, size_));
    ++published_;
    SendFrame(publisher, 1, message.data(), message.size());
  }
}

bool Bench::Run(size_t connections, absl::Duration warmup, absl::Duration duration,
                absl::Duration setup_timeout, absl::Duration stall, size_t concurrency,
                int server_pid) {
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  size_t total = connections + (broadcast_ ? 1 : 0);
  conns_.resize(total);
  for (size_t i = 0; i < total; ++i) conns_[i].id = i;
  if (broadcast_) reached_.assign(window_ + 1, 0);

  std::vector<epoll_event> events(1024);
  auto poll_once = [&](int timeout_ms) {
    int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), timeout_ms);
    now_ns_ = NowNs();
    for (int i = 0; i < n; ++i) {
      Conn& conn = conns_[events[i].data.u64];
      if (conn.state != State::kFailed) OnEvent(conn, events[i].events);
    }
  };

  // Setup: every connection upgraded, `concurrency` at a time.
  uint64_t setup_deadline = NowNs() + static_cast<uint64_t>(absl::ToInt64Nanoseconds(setup_timeout));
  size_t started = 0;
  while (setup_done_ < total) {
    while (started < total && started - setup_done_ < concurrency) StartConnect(conns_[started++]);
    if (NowNs() > setup_deadline) {
      fprintf(stderr, "ws_bench: %zu of %zu connections upgraded in the setup time\n",
              setup_done_, total);
      return false;
    }
    poll_once(100);
  }
  if (stats_.errors > 0) return false;

  if (broadcast_) {
    Publish();
  } else {
    for (Conn& conn : conns_) {
      for (size_t i = 0; i < window_ && conn.state == State::kOpen; ++i) SendNextEcho(conn);
    }
  }
  // A server that stops answering one connection (or a broadcast that never reaches one
  // socket) would otherwise pass with a lower rate, its missing bytes never checked: a
  // connection that waits for a message and has received none for `stall` is an error.
  const uint64_t stall_ns = static_cast<uint64_t>(absl::ToInt64Nanoseconds(stall));
  now_ns_ = NowNs();
  for (Conn& conn : conns_) conn.last_progress_ns = now_ns_;
  uint64_t next_check = now_ns_;
  auto check_stalls = [&] {
    for (Conn& conn : conns_) {
      const bool waiting = broadcast_ ? conn.received < published_ : conn.received < conn.sent;
      if (conn.state == State::kOpen && waiting && now_ns_ - conn.last_progress_ns > stall_ns) {
        Fail(conn, "no message for the stall timeout");
      }
    }
  };
  auto run_for = [&](absl::Duration d) {
    uint64_t end = NowNs() + static_cast<uint64_t>(absl::ToInt64Nanoseconds(d));
    while (now_ns_ < end && stats_.errors == 0) {
      poll_once(10);
      if (now_ns_ >= next_check) {  // Ten times a second: 10,000 sockets cost little.
        check_stalls();
        next_check = now_ns_ + 100000000;
      }
    }
  };
  run_for(warmup);
  uint64_t messages0 = stats_.messages;
  long long server0 = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  uint64_t own0 = OwnCpuNs();
  uint64_t t0 = NowNs();
  run_for(duration);
  uint64_t t1 = NowNs();
  uint64_t own1 = OwnCpuNs();
  long long server1 = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  uint64_t messages = stats_.messages - messages0;
  double seconds = static_cast<double>(t1 - t0) / 1e9;
  double rate = static_cast<double>(messages) / seconds;
  double tick_ns = 1e9 / static_cast<double>(sysconf(_SC_CLK_TCK));
  double server_ns = server0 >= 0 && server1 >= 0 ? static_cast<double>(server1 - server0) * tick_ns
                                                  : -1;
  double server_ns_per = server_ns >= 0 && messages > 0 ? server_ns / static_cast<double>(messages)
                                                        : -1;
  double server_share = server_ns >= 0 ? 100 * server_ns / static_cast<double>(t1 - t0) : -1;
  double client_share = 100 * static_cast<double>(own1 - own0) / static_cast<double>(t1 - t0);
  bool ok = stats_.errors == 0 && messages > 0;
  double mib = rate * static_cast<double>(size_) / 1048576.0;
  if (absl::GetFlag(FLAGS_json)) {
    printf("{\"mode\":\"%s\",\"connections\":%zu,\"size\":%zu,\"messages\":%llu,"
           "\"msgs_per_s\":%.0f,\"mib_per_s\":%.1f,\"server_cpu_ns_per_msg\":%.0f,"
           "\"server_cpu_pct\":%.1f,\"client_cpu_pct\":%.1f,\"errors\":%llu,\"mismatches\":%llu,"
           "\"ok\":%s}\n",
           broadcast_ ? "broadcast" : "echo", connections, size_,
           static_cast<unsigned long long>(messages), rate, mib, server_ns_per, server_share,
           client_share, static_cast<unsigned long long>(stats_.errors),
           static_cast<unsigned long long>(stats_.mismatches), ok ? "true" : "false");
  } else {
    printf("%s, %zu connections, %zu B: %llu %s in %.2f s = %.0f/s (%.1f MiB/s)\n",
           broadcast_ ? "broadcast" : "echo", connections, size_,
           static_cast<unsigned long long>(messages), broadcast_ ? "deliveries" : "echoes",
           seconds, rate, mib);
    if (server_ns_per >= 0) {
      printf("server CPU: %.0f ns per message, %.0f %% of a CPU; client CPU %.0f %%\n",
             server_ns_per, server_share, client_share);
    }
    printf("errors %llu, mismatches %llu: %s\n", static_cast<unsigned long long>(stats_.errors),
           static_cast<unsigned long long>(stats_.mismatches), ok ? "ok" : "FAILED");
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A WebSocket load generator that checks every byte. Usage: ws_bench --addr=HOST:PORT "
      "--mode=echo|broadcast --connections=N --size=BYTES --duration=5s");
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "echo" && mode != "broadcast") {
    fprintf(stderr, "ws_bench: --mode must be echo or broadcast\n");
    return 2;
  }
  bool broadcast = mode == "broadcast";
  std::string addr = absl::GetFlag(FLAGS_addr);
  size_t colon = addr.rfind(':');
  sockaddr_in address{};
  address.sin_family = AF_INET;
  int port = 0;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, addr.substr(0, colon).c_str(), &address.sin_addr) != 1 ||
      !absl::SimpleAtoi(addr.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    fprintf(stderr, "ws_bench: --addr must be IPv4 host:port, not %s\n", addr.c_str());
    return 2;
  }
  address.sin_port = htons(static_cast<uint16_t>(port));
  int connections = absl::GetFlag(FLAGS_connections);
  int size = absl::GetFlag(FLAGS_size);
  int window = absl::GetFlag(FLAGS_window);
  if (connections < 1 || size < 1 || size > (64 << 20) || window < 1) {
    fprintf(stderr, "ws_bench: --connections, --size and --window must be positive\n");
    return 2;
  }
  if (broadcast && size < 20) {  // A published message starts with its 20-digit number.
    fprintf(stderr, "ws_bench: broadcast messages need --size of 20 or more\n");
    return 2;
  }
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (static_cast<rlim_t>(connections) + 16 > limit.rlim_cur) {
    fprintf(stderr, "ws_bench: %d connections need more descriptors than the limit %llu\n",
            connections, static_cast<unsigned long long>(limit.rlim_cur));
    return 2;
  }
  std::string path = absl::GetFlag(FLAGS_path);
  if (path.empty()) path = broadcast ? "/chat" : "/";
  Bench bench(broadcast, address, path, static_cast<size_t>(size), static_cast<size_t>(window));
  bool ok = bench.Run(static_cast<size_t>(connections), absl::GetFlag(FLAGS_warmup),
                      absl::GetFlag(FLAGS_duration), absl::GetFlag(FLAGS_setup_timeout),
                      absl::GetFlag(FLAGS_stall_timeout),
                      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_connect_concurrency))),
                      absl::GetFlag(FLAGS_server_pid));
  return ok ? 0 : 1;
}
