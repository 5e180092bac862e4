// -----------------------------------------------------------------------------
// File: server/server.h
// -----------------------------------------------------------------------------
//
// `gev::Server` is a TCP or Unix socket server: a listener, N worker event loops (one thread each) that own
// the connections, and a `Handler` called on them. It is gev's `Server` in C++:
//
//   class Echo : public gev::Handler {
//     gev::Reply OnMessage(gev::Connection& c, gev::RingBuffer& in) override {
//       return gev::Reply::FromBuffer(in.Length());
//     }
//   };
//
//   Echo handler;
//   absl::StatusOr<std::unique_ptr<gev::Server>> server =
//       gev::NewServer(&handler, gev::Address(":1833"), gev::NumLoops(4));
//   if (!server.ok()) return Fail(server.status());   // bad address, port in use, bad option
//   (*server)->RunEvery(absl::Seconds(1), [] { ... });
//   (*server)->Start();                                 // blocks until Stop()
//
// Two ways to accept (ServerOptions::reuse_port): one acceptor loop, run by the thread that
// calls Start(), hands each connection to a worker chosen by the load balancer; or every
// worker has its own SO_REUSEPORT listener and the kernel spreads connections.
//
// Stop() stops accepting, lets every connection flush its pending output for at most
// `stop_timeout`, closes what is left (OnClose runs once for each connection), joins every
// thread and returns; Start() then returns too. Client connections running on the server's
// loops (a proxy's upstreams) get the same time to close, so their OnClose runs as well; one
// still open at the deadline is not closed by the server (stop such clients first).
//
// Drain() is the gentle stop: it stops accepting and lets each connection finish
// (Handler::OnDrain tells it to) for at most `stop_timeout`. Restarts that refuse and reset no
// client build on it: a server started with ServerOptions::handoff_path takes the listening
// sockets of the server it replaces, which then drains; or it serves descriptors it was given
// (ServerOptions::listeners: systemd's socket activation, a parent's), and hands its own
// (Listeners()) to whoever it likes.
//
// Thread safety: Start() is called once, from the thread that will serve as the acceptor.
// Stop(), RunAfter(), RunEvery(), Cancel() and the counts are thread-safe; Stop() called on one
// of the server's own threads (in a handler or a timer) starts the shutdown and returns at
// once, since that thread has to go on running for the shutdown to finish. The handler must
// outlive the server.

#ifndef GEV_SERVER_SERVER_H_
#define GEV_SERVER_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "net/acceptor.h"
#include "net/connection.h"
#include "net/inet_address.h"
#include "net/inherited_sockets.h"
#include "net/socket_address.h"
#include "server/handler.h"
#include "server/options.h"
#include "server/protocol.h"

namespace gev {

namespace server_internal {
struct Worker;
class ConnectionLimit;
class HandedOverListeners;
class HandoffService;
}  // namespace server_internal

// What one worker loop has done since the server was created. A snapshot, read without
// stopping anything: counters read at slightly different moments.
struct LoopStats {
  size_t open_connections = 0;
  uint64_t accepted = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  // Write system calls to sockets (replies gathered per iteration take one).
  uint64_t writes = 0;
  uint64_t polls = 0;
  uint64_t wakeups = 0;
  uint64_t tasks = 0;
  // Closed connections by the code of their OnClose reason (kOk: orderly); codes never seen
  // are absent.
  std::map<absl::StatusCode, uint64_t> closes;

  uint64_t closed() const;
  LoopStats& operator+=(const LoopStats& other);
};

struct ServerStats {
  std::vector<LoopStats> loops;  // One per worker loop, in order.
  // Times a listener stopped accepting at ServerOptions::max_connections.
  uint64_t accept_pauses = 0;
  LoopStats Total() const;
};

class Server {
 public:
  // Server::Create() — binds and listens (so the port is known and connections queue before
  // Start), creates the loops. Errors: bad options or address, port in use.
  static absl::StatusOr<std::unique_ptr<Server>> Create(Handler* handler, ServerOptions options);

  // Stops (waiting, if Start() is running on another thread) and releases everything.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Server::Start() — serves until Stop(), then returns OK; at once if Stop() came first. If a
  // listener cannot start, the server stops and Start returns why (also logged).
  absl::Status Start();
  // Server::Stop() — see the header comment. Idempotent. Thread-safe.
  void Stop();
  // Server::Drain() — stops accepting, calls Handler::OnDrain on every open connection, and
  // waits until they have all closed or `stop_timeout` has passed (those still open then are
  // ended with a reset); then as Stop(). A Stop() meanwhile closes them at once, as Stop does.
  // Thread-safe; on one of the server's threads it returns at once, as Stop().
  void Drain();

  // Where the listening sockets came from.
  enum class ListenerSource {
    kBound,       // Bound here, at ServerOptions::address.
    kGiven,       // ServerOptions::listeners.
    kHandedOver,  // From the server serving ServerOptions::handoff_path.
  };
  ListenerSource listener_source() const { return listener_source_; }
  // Server::Listeners() — the listening descriptors, owned by the server: valid until it stops
  // accepting (empty once Stop or Drain has begun; a descriptor read just before may be closed
  // by then). To pass to another process (dup them, or send them), which may serve them beside
  // or after this one: from this call on, a Unix socket's file is left in place when this
  // server stops. Thread-safe.
  std::vector<int> Listeners() const;
  // The handoff path (ServerOptions::handoff_path) is served: a successor may ask for the
  // listeners now. Thread-safe.
  bool ServesHandoff() const { return serves_handoff_.load(); }
  // A successor took the listeners over; this server drains (or has). Thread-safe.
  bool HandedOver() const { return handed_over_.load(); }

  // Timers on the acceptor loop (the thread running Start). Thread-safe; usable before Start.
  TimerId RunAfter(absl::Duration delay, absl::AnyInvocable<void()> task);
  TimerId RunEvery(absl::Duration interval, absl::AnyInvocable<void()> task);
  void Cancel(TimerId id);

  // The bound address (port 0 resolved); for a Unix socket one that says only AF_UNIX.
  const InetAddress& ListenAddress() const { return listen_address_.inet(); }
  // The bound address with a Unix socket's path.
  const SocketAddress& ListenSocketAddress() const { return listen_address_; }
  size_t NumLoops() const;
  // Server::Loop() — worker loop `i` (< NumLoops()), to run a Client on beside the server's
  // connections (ClientOptions::loop); null past the last. Thread-safe.
  std::shared_ptr<EventLoop> Loop(size_t i) const;
  // Open connections in total and on loop `loop`. Thread-safe.
  size_t ConnectionCount() const;
  size_t ConnectionCount(size_t loop) const;
  // Server::Stats() — per-loop counters: connections, bytes, polls, tasks, closes by reason.
  // Thread-safe.
  ServerStats Stats() const;
  const ServerOptions& options() const { return options_; }

 private:
  enum class RunState { kCreated, kRunning, kStopping, kStopped };

  Server(Handler* handler, ServerOptions options);
  absl::Status Init(const SocketAddress& address, const Connection::Options& connection_options);
  // The listeners given or handed over, checked; empty when the server binds its own.
  absl::StatusOr<std::vector<InheritedSocket>> TakeListeners(const SocketAddress& address);
  // Sets up the worker and acceptor loops' acceptors over `sockets`, or binds `address`.
  absl::Status SetUpAcceptors(const SocketAddress& address, std::vector<InheritedSocket> sockets);
  // Every listener is polled: confirms a takeover (the predecessor drains) and serves the
  // handoff path. Acceptor loop.
  void OnListening();
  void StopWith(bool drain);
  void Dispatch(int fd, const InetAddress& peer);
  // A slot freed under max_connections: every waiting listener polls again. Thread-safe.
  void WakeListeners();
  // A listener failed to start: remembered for Start() to return, logged, the server stops.
  void FailToListen(const absl::Status& status);
  // Drains and joins the workers, then marks the server stopped; returns Start()'s result.
  absl::Status ShutDown();
  bool IsServerThread() const;

  Handler* const handler_;
  const ServerOptions options_;
  SocketAddress listen_address_;
  std::unique_ptr<EventLoop> main_loop_;
  // Before the listeners, which hold it as their gate; null without max_connections.
  std::unique_ptr<server_internal::ConnectionLimit> limit_;
  // Acceptor mode only; main loop thread (and Listeners(): the descriptors are fixed at Init).
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  ListenerSource listener_source_ = ListenerSource::kBound;
  // Given (ServerOptions::listeners), or handed over by a server they were given to: served
  // wherever they are bound, by this server and its successors.
  bool listeners_given_ = false;
  // The startup handoff request found nobody serving the handoff path (see OnListening).
  bool handoff_path_unserved_ = false;
  // Every acceptor's descriptor, fixed at Init.
  std::vector<int> listener_fds_;
  // Handed-over listeners not yet confirmed: "ready" goes once they are all polled.
  std::unique_ptr<server_internal::HandedOverListeners> takeover_;
  // Acceptor loop: answers a successor's request for the listeners.
  std::unique_ptr<server_internal::HandoffService> handoff_service_;
  // Listen tasks not yet run; the last one to finish calls OnListening.
  std::atomic<size_t> listens_pending_{0};
  // A successor said it serves the listeners (this server drains).
  std::atomic<bool> handed_over_{false};
  // The listeners went to another process, or may have (Listeners()): a Unix socket's file is
  // left in place when this server stops.
  mutable std::atomic<bool> listeners_shared_{false};
  // The handoff path is served (a successor may ask now).
  std::atomic<bool> serves_handoff_{false};
  // Stop() after Drain(): the draining connections are closed at once.
  std::atomic<bool> hurry_{false};
  // The stop under way is a Drain(). Set before the acceptor loop stops.
  std::atomic<bool> drain_{false};
  std::vector<std::unique_ptr<server_internal::Worker>> workers_;

  // Main-loop-thread-only state.
  LoadBalancer balancer_;
  std::vector<size_t> connection_counts_;  // Reused per accepted connection.

  std::atomic<RunState> run_state_{RunState::kCreated};
  std::mutex start_error_mutex_;
  absl::Status start_error_;  // Guarded by start_error_mutex_.
  std::mutex stopped_mutex_;
  std::condition_variable stopped_;  // Signalled when run_state_ becomes kStopped.
};

// NewServer() — gev's constructor: a handler and any number of option functions.
template <typename... Options>
absl::StatusOr<std::unique_ptr<Server>> NewServer(Handler* handler, Options&&... options) {
  ServerOptions server_options;
  (Option(std::forward<Options>(options))(server_options), ...);
  return Server::Create(handler, std::move(server_options));
}

}  // namespace gev

#endif  // GEV_SERVER_SERVER_H_
