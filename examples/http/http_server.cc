// An HTTP/1.1 server on gev in TechEmpower's plaintext shape: GET /plaintext answers
// "Hello, World!", with keep-alive, pipelining (every complete request of a read is answered,
// in order, in one write), Content-Length bodies (read and discarded), HTTP/1.0's close by
// default, and a Date header each loop refreshes once a second. Malformed requests get a 400,
// oversized heads a 431, and the connection closes after either (half-closed first, its
// further input dropped, so that the response is not lost to a reset).
//
//   tools/bazel run //examples/http:http_server -- --port=8080 --loops=2
//   curl -i http://127.0.0.1:8080/plaintext
//
// With --tls_cert and --tls_key it serves HTTPS instead (TLS 1.3 or 1.2, ALPN http/1.1).
//
// Timeouts and descriptors, as nginx: a request head (from the connection's start, or from the
// first byte of the next request) must arrive within --header_timeout (408, then close), and a
// keep-alive connection may wait --keepalive_timeout for its next request. When the process
// nears its descriptor limit, each new connection closes the connection of its loop that has
// waited longest for a request (idle keep-alive ones first, then slow heads), so that slow or
// idle clients cannot lock ordinary requests out.
//
// Restarts that lose no request (--handoff, see examples/common/restart.h): on SIGHUP a new
// process takes the listeners and this one drains as nginx does on a graceful shutdown. A
// request in progress is answered with "Connection: close" and the connection closes after
// it; a keep-alive connection between requests is closed (FIN) once it has been quiet for
// kDrainQuiet, at once if it already has. A connection quiet for less may have its next
// request on the wire, and a close then would lose that request (RFC 9112, 9.3.1 leaves the
// retry to the client); such a connection gets the close with its next response instead.

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "examples/common/restart.h"
#include "examples/common/serve.h"
#include "http/request.h"
#include "server/server.h"
#include "tls/tls.h"

ABSL_FLAG(int, port, 8080, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, 1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(bool, gather_writes, true, "write each loop iteration's responses once per connection");
ABSL_FLAG(std::string, tls_cert, "", "serve HTTPS with this PEM certificate chain");
ABSL_FLAG(std::string, tls_key, "", "the private key of --tls_cert");
ABSL_FLAG(absl::Duration, header_timeout, absl::Seconds(60),
          "longest a request head may take to arrive (nginx's client_header_timeout)");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(75),
          "longest a keep-alive connection may wait for its next request");
ABSL_FLAG(std::string, tls_client_ca, "",
          "with --tls_cert: require client certificates issued by a CA in this PEM file");

namespace gev::http {
namespace {

constexpr std::string_view kHelloWorld = "Hello, World!";
// How long a connection that got its last response may go on sending before it is closed.
constexpr absl::Duration kLingerTime = absl::Seconds(2);
// Draining: how long a connection between requests must have been quiet to be closed as idle.
constexpr uint64_t kDrainQuietMs = 1000;

struct ConnectionState;

// A loop's connections that wait for a request, in the order they began waiting (the oldest
// first): a list the connections link themselves into, so that moving one costs no allocation.
struct WaitingList {
  ConnectionState* front = nullptr;
  ConnectionState* back = nullptr;
};

struct ConnectionState {
  bool closing = false;  // The last response is out (or on its way); the write side is shut.
  bool partial = false;  // Bytes of a request not yet answered are in the input.
  // Waiting for a request since this time (EventLoop::NowMs), in one of its loop's lists: idle
  // (nothing of a request yet, after a response) or heads (a request begun, or none yet on a
  // new connection).
  uint64_t waiting_since_ms = 0;
  WaitingList* list = nullptr;
  ConnectionState* previous = nullptr;
  ConnectionState* next = nullptr;
  std::weak_ptr<Connection> connection;

  void Unlink() {
    if (list == nullptr) return;
    (previous != nullptr ? previous->next : list->front) = next;
    (next != nullptr ? next->previous : list->back) = previous;
    list = nullptr;
    previous = next = nullptr;
  }
  void LinkLast(WaitingList* to, uint64_t now_ms) {
    Unlink();
    list = to;
    waiting_since_ms = now_ms;
    previous = to->back;
    (to->back != nullptr ? to->back->next : to->front) = this;
    to->back = this;
  }
};

class HttpHandler : public Handler {
 public:
  HttpHandler(size_t loops, absl::Duration header_timeout, absl::Duration keepalive_timeout)
      : header_timeout_ms_(static_cast<uint64_t>(absl::ToInt64Milliseconds(header_timeout))),
        keepalive_timeout_ms_(
            static_cast<uint64_t>(absl::ToInt64Milliseconds(keepalive_timeout))),
        per_loop_(loops) {}

  void OnLoopStart(EventLoop& loop, size_t loop_index) override {
    auto state = std::make_unique<LoopState>();
    state->RefreshDate();
    // The loop's timer, on the loop's thread: the Date its responses share, and the end of
    // the waits that took too long, without a lock.
    LoopState* raw = state.get();
    loop.RunEvery(absl::Seconds(1), [this, raw, &loop] {
      raw->RefreshDate();
      EndLongWaits(*raw, loop.NowMs());
    });
    per_loop_[loop_index] = std::move(state);
    // Read once the server has raised the limit (ServeUntilSignal). What is kept back covers
    // the process's own descriptors: listeners, each loop's poller and wakeup, the acceptor's
    // spare, the standard streams.
    rlimit limit{};
    if (loop_index == 0 && ::getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
        limit.rlim_cur != RLIM_INFINITY) {
      size_t reserve = 16 + 4 * per_loop_.size();
      descriptor_budget_.store(limit.rlim_cur > reserve ? limit.rlim_cur - reserve : 1);
    }
  }

  void OnConnect(Connection& conn) override {
    ConnectionState& state = conn.EmplaceContext<ConnectionState>();
    state.connection = conn.shared_from_this();
    LoopState& loop = *per_loop_[conn.LoopIndex()];
    state.LinkLast(&loop.heads, conn.loop()->NowMs());  // Its first head's time starts now.
    size_t open = open_connections_.fetch_add(1) + 1;
    if (open > descriptor_budget_.load()) EvictLongestWaiting(loop, &state);
  }

  // The server drains: each loop closes its quiet connections now and every 50 ms; the others
  // close after their next response.
  void OnDrain(Connection& conn) override {
    LoopState& loop = *per_loop_[conn.LoopIndex()];
    if (loop.draining) return;
    loop.draining = true;
    EventLoop* event_loop = conn.loop();
    CloseQuietConnections(loop, event_loop->NowMs());
    event_loop->RunEvery(absl::Milliseconds(50), [&loop, event_loop] {
      CloseQuietConnections(loop, event_loop->NowMs());
    });
  }

  void OnClose(Connection& conn, const absl::Status&) override {
    open_connections_.fetch_sub(1);
    if (ConnectionState* state = conn.ContextAs<ConnectionState>()) state->Unlink();
  }

  Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
    ConnectionState* state = conn.ContextAs<ConnectionState>();
    if (state->closing) {  // Half-closed after a last response: what comes now is dropped.
      buffer.RetrieveAll();
      return {};
    }
    LoopState& loop = *per_loop_[conn.LoopIndex()];
    loop.out.clear();
    bool close = false;
    bool answered = false;
    while (!close) {
      // Empty lines before a request line are skipped (RFC 9112, section 2.2).
      while (!buffer.IsEmpty() && (buffer.At(0) == '\n' || (buffer.At(0) == '\r' &&
                                                             buffer.Length() >= 2 &&
                                                             buffer.At(1) == '\n'))) {
        buffer.Retrieve(buffer.At(0) == '\n' ? 1 : 2);
      }
      // Looked for in the first kMaxHeadBytes only: no head is longer.
      std::string_view window =
          buffer.Contiguous(std::min(buffer.Length(), kMaxHeadBytes), loop.head, sizeof(loop.head));
      size_t head_length = HeadLength(window);
      if (head_length == std::string_view::npos) {
        if (buffer.Length() < kMaxHeadBytes) break;  // More of the head is on its way.
        AppendStatus(loop, StatusLine(HeadStatus::kHeadTooLarge));
        close = true;
        break;
      }
      Request request;
      HeadStatus status = ParseHead(window.substr(0, head_length), &request);
      if (status != HeadStatus::kOk) {
        AppendStatus(loop, StatusLine(status));
        close = true;
        break;
      }
      if (buffer.Length() - head_length < request.content_length) break;  // The body's coming.
      close = !request.keep_alive || loop.draining;
      Respond(loop, request, close);
      answered = true;
      buffer.Retrieve(head_length + request.content_length);
    }
    state->partial = !close && !buffer.IsEmpty();
    if (!close) {
      // Waiting again: for the next request (idle), or for the rest of one begun now. A head
      // that only grew keeps the time it began: the header timeout is for the whole head.
      // (Blank lines alone change nothing: they would keep an idle connection for ever.)
      bool began = answered || (state->list != &loop.heads && !buffer.IsEmpty());
      if (began) {
        state->LinkLast(buffer.IsEmpty() ? &loop.idle : &loop.heads, conn.loop()->NowMs());
      }
    }
    if (close) {
      state->Unlink();
      // A close with the peer's bytes unread would reset the connection, and a reset can
      // destroy the response in flight before the client reads it. So, as RFC 9112 (9.6) and
      // nginx's lingering close do: half-close after the responses below, drop what else
      // arrives until the peer closes, and close anyway after kLingerTime.
      buffer.RetrieveAll();
      state->closing = true;
      conn.ShutdownWrite();
      // A hard limit: a peer that neither closes nor reads its responses is reset then.
      conn.loop()->RunAfter(kLingerTime, [weak = std::weak_ptr<Connection>(conn.shared_from_this())] {
        if (ConnectionPtr kept = weak.lock()) {
          kept->ForceClose(absl::DeadlineExceededError("lingering close timed out"));
        }
      });
    }
    // The loop's buffer is rewritten only by its next OnMessage, after these bytes are taken.
    return Reply::View(loop.out);
  }

 private:
  struct LoopState {
    WaitingList idle;          // Keep-alive connections between requests.
    bool draining = false;     // The server is draining: no keep-alive any more.
    WaitingList heads;         // Connections with a request under way, or none yet.
    std::string out;           // Every response of one OnMessage call.
    std::string date;          // "Date: <IMF-fixdate>\r\n"
    char head[kMaxHeadBytes];  // A request head that wraps around the input ring.

    void RefreshDate() {
      std::time_t now = std::time(nullptr);
      std::tm utc;
      gmtime_r(&now, &utc);
      char text[64];
      size_t n = std::strftime(text, sizeof(text), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &utc);
      date.assign(text, n);
    }
  };

  static void Respond(LoopState& loop, const Request& request, bool close) {
    bool found = request.target == "/plaintext" || request.target == "/";
    std::string_view body = found ? kHelloWorld : "Not Found";
    std::string& out = loop.out;
    out.append(found ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.1 404 Not Found\r\n");
    out.append("Server: gev\r\n");
    out.append(loop.date);
    out.append("Content-Type: text/plain\r\nContent-Length: ");
    out.append(std::to_string(body.size()));
    out.append("\r\n");
    if (close) {
      out.append("Connection: close\r\n");
    } else if (request.minor_version == 0) {
      out.append("Connection: keep-alive\r\n");
    }
    out.append("\r\n");
    if (request.method != "HEAD") out.append(body.data(), body.size());
  }

  // Draining: connections with no request under way that have been quiet for kDrainQuietMs
  // are closed (FIN).
  static void CloseQuietConnections(LoopState& loop, uint64_t now_ms) {
    std::vector<ConnectionPtr> quiet;
    for (WaitingList* list : {&loop.idle, &loop.heads}) {
      for (ConnectionState* state = list->front; state != nullptr; state = state->next) {
        if (state->partial || now_ms - state->waiting_since_ms < kDrainQuietMs) continue;
        if (ConnectionPtr conn = state->connection.lock()) quiet.push_back(std::move(conn));
      }
    }
    for (const ConnectionPtr& conn : quiet) {
      if (ConnectionState* state = conn->ContextAs<ConnectionState>()) {
        state->Unlink();
        state->closing = true;
      }
      conn->Close();
    }
  }

  // Connections whose wait has lasted too long: idle ones are closed (FIN), slow heads are
  // answered 408 and closed, as nginx does.
  void EndLongWaits(LoopState& loop, uint64_t now_ms) {
    while (loop.idle.front != nullptr &&
           now_ms - loop.idle.front->waiting_since_ms >= keepalive_timeout_ms_) {
      ConnectionState* state = loop.idle.front;
      state->Unlink();
      // A reason makes the close bounded (StopTimeout, then RST): a client that never read its
      // responses would otherwise hold the descriptor while zero-window probes keep it alive.
      if (ConnectionPtr conn = state->connection.lock()) {
        conn->Close(absl::DeadlineExceededError("keep-alive timeout"));
      }
    }
    while (loop.heads.front != nullptr &&
           now_ms - loop.heads.front->waiting_since_ms >= header_timeout_ms_) {
      ConnectionState* state = loop.heads.front;
      state->Unlink();
      ConnectionPtr conn = state->connection.lock();
      if (conn == nullptr) continue;
      loop.out.clear();
      AppendStatus(loop, "408 Request Timeout");
      // Refused only when the connection is closing already; then it ends on its own.
      (void)conn->Send(loop.out);
      state->closing = true;
      conn->Close(absl::DeadlineExceededError("header timeout"));  // Bounded, as above.

    }
  }

  // Near the descriptor limit: the connection of this loop that has waited longest for a
  // request goes, idle ones first (their responses are written, unless the client has not
  // read them), then slow heads. Not `newcomer`.
  void EvictLongestWaiting(LoopState& loop, ConnectionState* newcomer) {
    for (WaitingList* list : {&loop.idle, &loop.heads}) {
      ConnectionState* oldest = list->front;
      if (oldest == nullptr || oldest == newcomer) continue;
      oldest->Unlink();
      if (ConnectionPtr conn = oldest->connection.lock()) {
        evicted_.fetch_add(1);
        conn->ForceClose(absl::ResourceExhaustedError(
            "closed to free a descriptor: it waited longest for a request"));
      }
      return;
    }
  }

  static void AppendStatus(LoopState& loop, std::string_view status) {
    loop.out.append("HTTP/1.1 ").append(status.data(), status.size()).append("\r\nServer: gev\r\n");
    loop.out.append(loop.date);
    loop.out.append("Content-Length: 0\r\nConnection: close\r\n\r\n");
  }

  const uint64_t header_timeout_ms_;
  const uint64_t keepalive_timeout_ms_;
  // One per loop, created and used on that loop's thread only.
  std::vector<std::unique_ptr<LoopState>> per_loop_;
  // Every loop's: connections open, and how many may be before the longest waiting goes.
  std::atomic<size_t> open_connections_{0};
  std::atomic<size_t> descriptor_budget_{SIZE_MAX};
  std::atomic<uint64_t> evicted_{0};
};

}  // namespace
}  // namespace gev::http

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("An HTTP/1.1 plaintext server. Usage: http_server --port=8080");
  absl::ParseCommandLine(argc, argv);
  int loops = absl::GetFlag(FLAGS_loops);
  if (loops <= 0) loops = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::shared_ptr<gev::TransportFactory> tls;
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    gev::tls::ServerConfig config;
    config.certificate.chain_file = absl::GetFlag(FLAGS_tls_cert);
    config.certificate.key_file = absl::GetFlag(FLAGS_tls_key);
    config.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
    config.alpn = {"http/1.1"};
    absl::StatusOr<std::shared_ptr<gev::tls::ServerContext>> context =
        gev::tls::ServerContext::Create(config);
    if (!context.ok()) return gev::examples::Fail(context.status());
    tls = gev::tls::ServerTransport(*context);
  }
  gev::http::HttpHandler handler(static_cast<size_t>(loops), absl::GetFlag(FLAGS_header_timeout),
                                 absl::GetFlag(FLAGS_keepalive_timeout));
  absl::StatusOr<gev::Option> listeners = gev::examples::RestartableListeners();
  if (!listeners.ok()) return gev::examples::Fail(listeners.status());
  auto server = gev::NewServer(
      &handler, *listeners, gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
      gev::NumLoops(loops), gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
      gev::GatherWrites(absl::GetFlag(FLAGS_gather_writes)), gev::WithTransport(tls));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeWithRestarts(**server, argc, argv);
}
