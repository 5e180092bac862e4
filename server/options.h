// -----------------------------------------------------------------------------
// File: server/options.h
// -----------------------------------------------------------------------------
//
// The knobs of a `gev::Server`, set gev style with option functions:
//
//   auto server = gev::NewServer(&handler, gev::Address(":1833"), gev::NumLoops(4),
//                                gev::ReusePort(true), gev::IdleTime(absl::Seconds(30)));
//
// or by filling a `ServerOptions` and calling `Server::Create(&handler, options)`.
//
// What a server's connections and a client's (server/client.h) have alike is one struct,
// `ConnectionSettings`, that `ServerOptions` and `ClientOptions` both are, checked by one
// validation: framing, socket options, limits, backpressure, timeouts and the transport.
//
// Load balancing (acceptor mode only; with ReusePort the kernel spreads connections):
// `RoundRobin()` (default), `LeastConnection()`, `SourceAddrHash()`, or any function from the
// peer address and the loops' current connection counts to a loop index. It runs on the
// acceptor thread.
//
// Thread safety: options are plain values, read once by Server::Create.

#ifndef GEV_SERVER_OPTIONS_H_
#define GEV_SERVER_OPTIONS_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "net/connection.h"
#include "net/transport.h"
#include "server/load_balancer.h"

namespace gev {

class Protocol;


struct ConnectionSettings {
  // Close connections quiet for longer than this; zero disables it. At most 12 days (longer
  // is taken as that: Connection::Options::idle_timeout).
  absl::Duration idle_time = absl::ZeroDuration();
  // Framing; null passes bytes through.
  std::shared_ptr<Protocol> protocol;
  bool tcp_no_delay = true;
  // SO_KEEPALIVE with this probe interval; zero leaves it off.
  absl::Duration tcp_keep_alive = absl::ZeroDuration();
  // Pending output above this calls Handler::OnHighWater (a producer should stop sending), and
  // Handler::OnLowWater follows once it has drained to half of it (OnWriteComplete: all of it).
  size_t high_water_mark = 64 * 1024 * 1024;
  // Between the two, stop reading from that peer (gev's default: a peer that does not read its
  // replies is not read either). False leaves reading to the handler (Connection::PauseReading
  // and ResumeReading from OnHighWater and OnLowWater), as a relay needs: it pauses the other
  // side, and a side that also paused itself would deadlock the pair.
  bool pause_reading_at_high_water = true;
  // A peer's FIN (it shut down its sending side) ends only that direction: Handler::
  // OnPeerShutdown runs, and the connection stays writable until the handler shuts its own
  // side (ShutdownWrite, Close); OnClose(OK) once both are done. Off (gev's default): a FIN
  // ends the connection once what it was sent is written.
  bool half_close = false;
  // Most bytes accepted for a peer and not yet written to it; a Send past it returns
  // ResourceExhausted and queues nothing of that call, and a reply past it ends the connection
  // (RST) with that reason. Zero means 4 x high_water_mark, at least 4 MiB. At least
  // high_water_mark, at most 2 GiB.
  size_t max_pending_output = 0;
  // Most unconsumed input bytes kept per connection; a peer that sends more is closed.
  size_t max_input_bytes = 64 * 1024 * 1024;
  // Replies and other small sends made on a loop are gathered per connection and written once
  // per loop iteration (Connection::Send); false writes each at once.
  bool gather_writes = true;
  // Most reads one readable event makes while each fills its 64 KiB; then the other ready
  // connections have their turn. Small requests never make a second read. The default, 8,
  // keeps windowed streams cheaper and their latency lower than libuv's 32; a server whose
  // peers flood it (uploads, a relay's bulk side) moves floods at less CPU per byte with 32
  // (docs/performance.md, "Why one rule cannot serve both"). 1 to
  // Connection::kMaxReadsPerEvent (64). Plain TCP and Unix connections only: with a transport
  // (TLS) its Read decides how much one event reads.
  int reads_per_event = Connection::kDefaultReadsPerEvent;
  // How long Stop() lets connections flush pending output before closing them anyway; and how
  // long a connection closed for a protocol error may write the replies it had produced
  // before it (then RST).
  absl::Duration stop_timeout = absl::Seconds(5);
  // After a close of ours (a protocol error's; any close that leaves the peer's bytes unread)
  // while the peer may still be sending: FIN after the output, then read and drop what comes
  // until the peer's FIN or this long without a byte (in all at most stop_timeout), as nginx's
  // lingering close. Closing with bytes unread makes the kernel reset the connection, and a
  // reset can destroy the replies just written before the peer reads them. Zero closes at once.
  absl::Duration linger_quiet = absl::Milliseconds(500);
  // What runs between each socket and its connection: TLS (tls::ServerTransport or
  // tls::ClientTransport in //tls) or another net/transport.h; null carries bytes as they are.
  // With one, OnConnect follows the handshake; a handshake that fails reaches
  // Handler::OnTransportError on a server, and is a failed attempt on a client.
  std::shared_ptr<TransportFactory> transport;
};

struct ServerOptions : ConnectionSettings {
  // "tcp" (IPv4 or IPv6 as the address says), "tcp4", "tcp6", or "unix" (a Unix domain socket;
  // not with ReusePort).
  std::string network = "tcp";
  // TCP: "host:port", ":port" (every interface), "[::1]:port"; port 0 picks a free one. Unix:
  // a path (a stale socket file is replaced, a live listener's is not) or, on Linux, "@name"
  // (abstract: no file).
  std::string address = ":1388";
  // Worker loops (threads); zero or less means one per CPU.
  int num_loops = 0;
  // True: each worker loop has its own SO_REUSEPORT listener and accepts for itself. False: one
  // acceptor loop (the thread that calls Start) hands connections to the workers.
  bool reuse_port = false;
  // Empty means RoundRobin().
  LoadBalancer load_balancer;
  // Most connections open at once; zero: no limit. At the limit the listeners stop accepting:
  // new clients wait in the kernel's listen backlog (and past it their connects are retried by
  // their kernels), not accepted and reset, and are accepted as connections close. The limit
  // counts a connection from its accept until its OnClose (or OnTransportError).
  size_t max_connections = 0;

  // Restarts that refuse and reset nobody: the server's listening sockets come from elsewhere
  // and go on to its successor, so they never close (clients waiting in their backlogs stay).
  //
  // Listening sockets to serve instead of binding `address`: systemd's (gev::TakeSystemdSockets
  // in net/inherited_sockets.h), a parent's, another server's Listeners(). The server owns them
  // from Create on, whether it succeeds or not; each must be a listening stream socket (checked,
  // FailedPrecondition otherwise). Acceptor mode: the acceptor loop serves them all. ReusePort:
  // loop i serves listener i; loops past the last share the listeners (a duplicate descriptor
  // each), and listeners past the last loop go to the loops in turn (or, where the kernel
  // migrates a closed SO_REUSEPORT listener's backlog, net.ipv4.tcp_migrate_req=1, are closed).
  std::vector<int> listeners;
  // A Unix socket path (or "@name") for handing listeners over. At Create the server asks the
  // server serving this path for its listeners and serves those: when they are bound where
  // `address` says, or were given to that server (then wherever they are bound). If nobody
  // serves there, the answer is a refusal, or the peer runs as another user or speaks another
  // protocol, it binds `address` as usual and logs why. Once started it serves the path
  // itself: a successor that asks gets its listeners, and this server then drains
  // (Server::Drain), so Start() returns once its connections have ended. Empty: neither.
  std::string handoff_path;
  // The longest each step of asking for listeners may wait for the running server.
  absl::Duration handoff_timeout = absl::Seconds(5);
  // Create fails (with why) instead of binding `address` when no listeners come over
  // handoff_path: for a restart, whose predecessor serves on when its successor gives up,
  // where binding beside it (ReusePort would let it) would leave both serving for good.
  bool handoff_required = false;
};

namespace server_internal {

// ConnectionOptionsFor() — the connections' options from `settings`, checked: InvalidArgument
// for a negative duration, a zero mark or limit, a pending-output cap outside
// [high_water_mark, 2 GiB], or reads per event outside [1, Connection::kMaxReadsPerEvent].
// The one validation of what servers and clients share.
absl::StatusOr<Connection::Options> ConnectionOptionsFor(const ConnectionSettings& settings);

}  // namespace server_internal

// An option function, as gev's `Option`.
using Option = std::function<void(ServerOptions&)>;

Option Network(std::string network);
Option Address(std::string address);
Option NumLoops(int loops);
Option ReusePort(bool on);
Option IdleTime(absl::Duration idle_time);
Option CustomProtocol(std::shared_ptr<Protocol> protocol);
Option LoadBalance(LoadBalancer balancer);
Option MaxConnections(size_t connections);
Option TCPNoDelay(bool on);
Option TCPKeepAlive(absl::Duration interval);
Option HighWaterMark(size_t bytes);
Option PauseReadingAtHighWater(bool on);
Option HalfClose(bool on);
Option MaxInputBytes(size_t bytes);
Option MaxPendingOutput(size_t bytes);
Option StopTimeout(absl::Duration timeout);
Option LingerQuiet(absl::Duration quiet);
Option GatherWrites(bool on);
Option ReadsPerEvent(int reads);
Option WithTransport(std::shared_ptr<TransportFactory> transport);
Option Listeners(std::vector<int> listening_fds);
Option HandoffPath(std::string path);
Option HandoffRequired(bool required);

}  // namespace gev

#endif  // GEV_SERVER_OPTIONS_H_
