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

namespace gev {

class Acceptor final : public EventHandler {
 public:
  // Takes ownership of `fd`.
  using NewConnectionCallback = absl::AnyInvocable<void(int fd, const InetAddress& peer)>;

  // Acceptor::Create() — binds and listens on `address` (port 0 picks a free port; see
  // listen_address()). Several acceptors may share a port when all set `reuse_port` (TCP).
  static absl::StatusOr<std::unique_ptr<Acceptor>> Create(EventLoop* loop,
                                                          const SocketAddress& address,
                                                          bool reuse_port);
  ~Acceptor() override;

  void set_new_connection_callback(NewConnectionCallback callback) {
    new_connection_ = std::move(callback);
  }
  // Acceptor::Listen() — starts accepting. Loop thread only.
  absl::Status Listen();
  // The bound address, with the real port when 0 was asked for.
  const SocketAddress& listen_address() const { return listen_address_; }

  uint64_t accepted_count() const { return accepted_.load(std::memory_order_relaxed); }
  // Connections accepted and closed at once because the process was out of descriptors.
  uint64_t shed_count() const { return shed_.load(std::memory_order_relaxed); }
  // How many times a shed took its spare descriptor back. Thread-safe.
  uint64_t spares_reopened() const { return spares_reopened_.load(std::memory_order_relaxed); }

  void HandleEvent(const PollEvent& event) override;

 private:
  Acceptor(EventLoop* loop, int listen_fd, const SocketAddress& listen_address);
  // Out of descriptors: sheds one pending connection through the spare descriptor. Returns
  // false when it could not (no spare), after pausing the listener for a back-off.
  bool ShedOneConnection();
  // The back-off's end: takes the spare back if it can and polls the listener again.
  void ResumeAfterBackoff();

  EventLoop* const loop_;
  const int listen_fd_;
  const SocketAddress listen_address_;
  // The socket file this acceptor created (a Unix path), to remove only that one.
  uint64_t socket_file_device_ = 0;
  uint64_t socket_file_inode_ = 0;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> shed_{0};
  std::atomic<uint64_t> spares_reopened_{0};
  // Loop-thread-only state.
  NewConnectionCallback new_connection_;
  int spare_fd_;
  bool listening_ = false;
  TimerId backoff_timer_ = 0;
};

}  // namespace gev

#endif  // GEV_NET_ACCEPTOR_H_
