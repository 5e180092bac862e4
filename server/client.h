// -----------------------------------------------------------------------------
// File: server/client.h
// -----------------------------------------------------------------------------
//
// `gev::Client` is an outbound connection — TCP or Unix — served by the same `Handler` and
// `Connection` as a server's: OnConnect once connected, OnMessage with what the peer sends
// (framed by a Protocol if given), replies sent back, OnClose once with the reason, Send from
// any thread, the same backpressure, limits and idle timeout. One Client is one connection to
// one address at a time, reconnecting if asked (muduo's TcpClient, libhv's reconnect):
//
//   class Pinger : public gev::Handler {
//     void OnConnect(gev::Connection& c) override { (void)c.Send("PING\r\n"); }
//     gev::Reply OnMessage(gev::Connection& c, gev::RingBuffer& in) override { ... }
//   };
//
//   gev::ClientOptions options;
//   options.reconnect.enabled = true;                  // backoff with jitter, see below
//   options.on_connect_error = [](const absl::Status& why, bool retrying) { ... };
//   absl::StatusOr<std::unique_ptr<gev::Client>> client =
//       gev::Dial(&pinger, "127.0.0.1:6379", options);  // a bad address fails here
//   ...
//   (*client)->Stop();                                  // or let it go out of scope
//
// Loops: by default a client runs its own loop thread. Given `options.loop`, it runs on that
// loop instead — a server connection's (`conn.shared_loop()`), so that a proxy's two sides
// share one thread and talk without locks, or one loop of a set shared by many clients.
//
// Connecting never blocks a loop: the connect is non-blocking with `connect_timeout`, and a
// host name is resolved on the process's resolver threads (net/resolver.h; lookups run side by
// side), the lookup bounded by `connect_timeout` too. A malformed address fails Create/Dial
// with InvalidArgument; a failed attempt reaches `on_connect_error` with a Status: Unavailable
// (refused, unreachable, a name service that failed to answer), DeadlineExceeded (the connect
// or the lookup timed out), NotFound (no such Unix socket, or no such host), or what errno
// says.
//
// Reconnect (`options.reconnect`): after a failed attempt the next waits initial_delay, then
// each wait is `multiplier` times the last, up to max_delay, each drawn at random from
// [(1 - jitter) x, x] so that clients that lost a server together do not return together.
// After a connection that was established closes, the waits start again from initial_delay
// (so a server that accepts and drops at once is retried every initial_delay).
// `max_attempts` failures in a row end it (zero: never). Stop() ends it at any point; no
// retry timer outlives the client.
//
// Thread safety: Create, Connect, Stop, connection() and Stats() are thread-safe. Callbacks run
// on the client's loop thread. Stop() (and the destructor) called off that thread return once
// OnClose has run for the connection, if there was one; called on it (from a callback), they
// return at once and OnClose follows. The handler must outlive that OnClose. A client that
// runs its own loop and is destroyed inside one of its callbacks cannot flush: its connection
// ends at once (reason Cancelled) and OnClose runs before the loop's thread exits. A client on
// a loop it does not own must be stopped while that loop runs (or after it has finished), since
// Stop waits for the loop; if that loop finishes with the client's connection still open, the
// connection is closed (its descriptor released) without an OnClose. A custom `resolve`
// function may still be running when Stop returns (its answer is then dropped): it must not
// use anything that dies with the client.

#ifndef GEV_SERVER_CLIENT_H_
#define GEV_SERVER_CLIENT_H_

#include <any>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "net/connection.h"
#include "net/resolver.h"
#include "net/socket_address.h"
#include "net/transport.h"
#include "server/handler.h"
#include "server/options.h"
#include "server/protocol.h"

namespace gev {

struct ReconnectPolicy {
  // Off: one attempt, and a failure or a close is the end.
  bool enabled = false;
  absl::Duration initial_delay = absl::Milliseconds(100);
  absl::Duration max_delay = absl::Seconds(30);
  double multiplier = 2.0;  // At least 1.
  double jitter = 0.2;      // In [0, 1]: each wait is drawn from [(1 - jitter) x, x].
  // Failed attempts in a row after which the client gives up; zero never gives up.
  int max_attempts = 0;
};

// What a client's connection has alike with a server's (ConnectionSettings: framing, socket
// options, limits, backpressure, stop timeout, transport) is set as on a server; what follows
// is the client's own.
struct ClientOptions : ConnectionSettings {
  // "tcp", "tcp4", "tcp6" or "unix"; the address as Server's (a path or "@name" for unix).
  std::string network = "tcp";
  std::string address;
  // The loop to run on; null starts a loop thread of the client's own.
  std::shared_ptr<EventLoop> loop;
  // Zero waits as long as the kernel does (minutes, for TCP).
  absl::Duration connect_timeout = absl::Seconds(10);
  ReconnectPolicy reconnect;
  // Called on the loop thread after each failed attempt: why, and whether another follows.
  std::function<void(const absl::Status& error, bool retrying)> on_connect_error;
  // Set as each new connection's context before OnConnect (a proxy's other side, say).
  std::any context;
  // Name lookups; null uses getaddrinfo. Runs on a resolver thread, beside other lookups:
  // thread-safe.
  ResolveFunction resolve;
  // The name the transport (ConnectionSettings::transport; TLS: tls::ClientTransport) sends
  // and checks the server's certificate against; empty takes the host of `address` (a Unix
  // socket has none: TLS over one needs this set).
  std::string server_name;
};

// A snapshot; fields read at slightly different moments.
struct ClientStats {
  bool connected = false;
  uint64_t attempts = 0;          // Connection attempts started, in all.
  uint64_t connects = 0;          // Of them, established.
  uint64_t failures_in_a_row = 0; // Since the last established connection.
  absl::Status last_error;        // The last failed attempt's reason; OK if none failed.
  bool gave_up = false;           // No attempt follows (max_attempts, or no reconnect).
};

namespace client_internal {
class ClientCore;
// The name a client's transport is given: options.server_name, or the host of its address.
std::string ServerNameFor(const ClientOptions& options);
}  // namespace client_internal

class Client {
 public:
  // Client::Create() — checks the options and the address (a name is looked up later, off the
  // loop); starts the client's own loop thread if it has no loop. Does not connect yet.
  static absl::StatusOr<std::unique_ptr<Client>> Create(Handler* handler, ClientOptions options);
  // Stop(), then the client's own loop (if any) stops.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Client::Connect() — starts the first attempt. Only the first call counts. Thread-safe.
  void Connect();
  // Client::Stop() — no attempt or retry after this; the connection is closed once its output
  // is flushed (at most stop_timeout, then dropped with RST). See the header comment for when
  // it returns. Idempotent. Thread-safe.
  void Stop();

  // The established connection, or null. Thread-safe.
  ConnectionPtr connection() const;
  ClientStats Stats() const;
  const std::shared_ptr<EventLoop>& loop() const { return loop_; }

 private:
  Client(std::shared_ptr<EventLoop> loop, std::shared_ptr<client_internal::ClientCore> core);

  std::shared_ptr<EventLoop> loop_;
  std::shared_ptr<client_internal::ClientCore> core_;
  std::thread own_loop_thread_;  // Joinable only when the client started its own loop.
};

// Dial() — Client::Create with `address` set, then Connect().
absl::StatusOr<std::unique_ptr<Client>> Dial(Handler* handler, std::string address,
                                             ClientOptions options = {});

}  // namespace gev

#endif  // GEV_SERVER_CLIENT_H_
