// -----------------------------------------------------------------------------
// File: net/acceptor.h
// -----------------------------------------------------------------------------
//
// `gev::Acceptor` owns a listening socket (TCP or Unix) on one event loop and hands each
// accepted connection (a non-blocking, close-on-exec descriptor and the peer's address) to a
// callback. A Unix socket's file is replaced if stale (see sockets::Listen) and removed when
// the acceptor is destroyed, unless another listener has replaced it meanwhile. On each
// readiness event it accepts until the backlog is empty (gev accepts one per event).
//
// Descriptor exhaustion (EMFILE/ENFILE) neither kills nor spins the listener: the acceptor
// keeps one spare descriptor; when out of descriptors it frees the spare, accepts the pending
// connection and closes it at once (so the peer sees a close, not a hang), then takes the spare
// again (muduo's approach). Acceptors in one process (ReusePort: one per loop) shed one at a
// time, so none takes the number another just freed. If even that is impossible it stops
// polling the listener for a short back-off and tries again, so it keeps serving once
// descriptors free up.
//
// A connection limit (the server's MaxConnections) is an `AcceptGate`: asked for a slot before
// each accept, and when it has none the acceptor stops polling the listener, so new clients
// wait in the kernel's listen backlog instead of being accepted and reset, until the gate calls
// ResumeAccepting() on the acceptor's loop.
//
// A listener the process did not open (systemd's, a parent's, one handed over by a running
// server) is taken with Acceptor::Adopt(), which checks what the descriptor is first. After
// its socket has been handed to another process, KeepSocketFile() leaves a Unix socket's file
// to that process.
//
// Example (on the loop thread):
//
//   auto acceptor = gev::Acceptor::Create(loop, *gev::InetAddress::Parse("127.0.0.1:0"),
//                                         /*reuse_port=*/false);
//   (*acceptor)->set_new_connection_callback([](int fd, const gev::InetAddress& peer) { ... });
//   (*acceptor)->Listen();
//
// Thread safety: create anywhere; Listen(), the callback and destruction happen on the loop
// thread. Counters are thread-safe.

#ifndef GEV_NET_ACCEPTOR_H_
#define GEV_NET_ACCEPTOR_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eventloop/event_loop.h"
#include "net/inet_address.h"
#include "net/socket_address.h"
#include "net/socket_ops.h"

namespace gev {

class Acceptor;

// AcceptGate — admission for one or more acceptors (a limit on open connections). Its calls
// come from the acceptors' loop threads, several at once with ReusePort: thread-safe.
class AcceptGate {
 public:
  virtual ~AcceptGate() = default;
  // A slot for the connection about to be accepted, used by it; false when none is free. The
  // slot is the new-connection callback's to give back when that connection ends.
  virtual bool TryReserve() = 0;
  // Gives back a slot TryReserve took that no connection used (nothing was waiting).
  virtual void Unreserve() = 0;
  // The calling acceptor stopped polling because TryReserve failed. The gate must arrange for
  // ResumeAccepting() to run on that acceptor's loop once a slot frees (if the acceptor still
  // exists then: the gate is not told of its end), and return true; or return false when a
  // slot freed meanwhile (the acceptor then goes on at once and waits for nothing).
  virtual bool WaitForSlot() = 0;
};

class Acceptor final : public EventHandler {
 public:
  // Takes ownership of `fd`.
  using NewConnectionCallback = absl::AnyInvocable<void(int fd, const InetAddress& peer)>;

  // Acceptor::Create() — binds and listens on `address` (port 0 picks a free port; see
  // listen_address()). Several acceptors may share a port when all set `reuse_port` (TCP).
  // `stale_grace`: how long a Unix path that refuses is given before it is taken for stale
  // (see sockets::BindUnix); zero for one the caller already found unserved.
  static absl::StatusOr<std::unique_ptr<Acceptor>> Create(
      EventLoop* loop, const SocketAddress& address, bool reuse_port,
      absl::Duration stale_grace = sockets::kStartingListenerGrace);
  // Acceptor::Adopt() — serves `fd`, a listening stream socket (TCP or Unix) opened elsewhere,
  // made non-blocking and close-on-exec here. Takes ownership on success; on failure
  // (FailedPrecondition: not a socket, not a stream, not listening) the caller keeps it. A
  // Unix socket's file is left in place when it goes: it is whoever made the socket's.
  static absl::StatusOr<std::unique_ptr<Acceptor>> Adopt(EventLoop* loop, int fd);
  ~Acceptor() override;

  void set_new_connection_callback(NewConnectionCallback callback) {
    new_connection_ = std::move(callback);
  }
  // Acceptor::Listen() — starts accepting. Loop thread only.
  absl::Status Listen();
  // Acceptor::set_gate() — asks `gate` (null: nobody) before each accept; set before Listen().
  // The gate must outlive the acceptor.
  void set_gate(AcceptGate* gate) { gate_ = gate; }
  // Acceptor::ResumeAccepting() — polls the listener again after the gate had no slot. Returns
  // whether it was waiting for one (false: a no-op). Loop thread only.
  bool ResumeAccepting();
  // The bound address, with the real port when 0 was asked for.
  const SocketAddress& listen_address() const { return listen_address_; }
  // The listening descriptor, owned by the acceptor (closed with it).
  int fd() const { return listen_fd_; }
  // Acceptor::KeepSocketFile() — the socket lives on in another process (handed over): its
  // Unix socket file is not removed when this acceptor goes. Loop thread only.
  void KeepSocketFile() { socket_file_inode_ = 0; }

  uint64_t accepted_count() const { return accepted_.load(std::memory_order_relaxed); }
  // Connections accepted and closed at once because the process was out of descriptors.
  uint64_t shed_count() const { return shed_.load(std::memory_order_relaxed); }
  // How many times a shed took its spare descriptor back. Thread-safe.
  uint64_t spares_reopened() const { return spares_reopened_.load(std::memory_order_relaxed); }
  // How many times the acceptor stopped polling because its gate had no slot. Thread-safe.
  uint64_t gate_pauses() const { return gate_pauses_.load(std::memory_order_relaxed); }

  void HandleEvent(const PollEvent& event) override;

 private:
  Acceptor(EventLoop* loop, int listen_fd, const SocketAddress& listen_address);
  // Out of descriptors: sheds one pending connection through the spare descriptor. Returns
  // false when it could not (no spare), after pausing the listener for a back-off.
  bool ShedOneConnection();
  // The back-off's end: takes the spare back if it can and polls the listener again (unless
  // the gate has no slot meanwhile).
  void ResumeAfterBackoff();
  // The gate has no slot: stops polling until ResumeAccepting(). Returns false when the gate
  // found a slot freed meanwhile (nothing paused).
  bool PauseForGate();

  EventLoop* const loop_;
  const int listen_fd_;
  const SocketAddress listen_address_;
  // The socket file this acceptor created (a Unix path), to remove only that one.
  uint64_t socket_file_device_ = 0;
  uint64_t socket_file_inode_ = 0;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> shed_{0};
  std::atomic<uint64_t> spares_reopened_{0};
  std::atomic<uint64_t> gate_pauses_{0};
  // Loop-thread-only state.
  NewConnectionCallback new_connection_;
  AcceptGate* gate_ = nullptr;
  bool waiting_for_gate_ = false;
  int spare_fd_;
  bool listening_ = false;
  TimerId backoff_timer_ = 0;
};

}  // namespace gev

#endif  // GEV_NET_ACCEPTOR_H_
