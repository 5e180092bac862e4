// -----------------------------------------------------------------------------
// File: net/connector.h
// -----------------------------------------------------------------------------
//
// `gev::Connector` makes one non-blocking connection attempt (TCP or Unix) on an event loop,
// with a timeout: muduo's Connector without its retry, which belongs to the client above it.
// The outcome is a connected non-blocking, close-on-exec descriptor or a Status saying why not:
//
//   Unavailable        refused (nothing listens), unreachable network or host, a Unix
//                      listener's backlog full, a TCP socket that connected to itself
//   DeadlineExceeded   no answer within the timeout (a listener whose backlog is full drops
//                      the SYN; a host that does not answer)
//   NotFound           a Unix socket path that does not exist
//   others             as errno says (absl::ErrnoToStatus), with the address in the message
//
//   std::shared_ptr<gev::Connector> attempt = gev::Connector::Start(
//       loop, address, absl::Seconds(3), [](absl::StatusOr<int> fd) { ... });
//   attempt->Cancel();   // no callback after this; the socket is closed
//
// The callback runs once, as a loop task after the event that decided it (never inside
// Start() or another handler's callback), unless Cancel() came first. The descriptor it is
// given is the callee's. A failed socket is closed in a later task, so its number is not
// reused while an event for it may still be in the loop's current batch.
//
// Thread safety: Start(), Cancel() and the callback are on the loop thread, and so is the
// release of the last reference while the attempt is undecided (or after the loop finished).
// The loop must run until the callback or Cancel().

#ifndef GEV_NET_CONNECTOR_H_
#define GEV_NET_CONNECTOR_H_

#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "net/socket_address.h"

namespace gev {

class Connector final : public EventHandler, public std::enable_shared_from_this<Connector> {
 public:
  using Callback = absl::AnyInvocable<void(absl::StatusOr<int> connected)>;

  // Connector::Start() — begins connecting to `address`; `timeout` zero means none (the
  // kernel's own, minutes for TCP). Loop thread only.
  static std::shared_ptr<Connector> Start(EventLoop* loop, const SocketAddress& address,
                                          absl::Duration timeout, Callback done);
  ~Connector() override;
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  // Connector::Cancel() — abandons the attempt: no callback, the socket closed. Idempotent.
  // Loop thread only.
  void Cancel();
  const SocketAddress& address() const { return address_; }

  void HandleEvent(const PollEvent& event) override;

 private:
  struct PrivateTag {};

 public:
  // Use Start(); public only for std::make_shared.
  Connector(PrivateTag, EventLoop* loop, const SocketAddress& address, Callback done);

 private:
  void Begin(absl::Duration timeout);
  void OnTimeout(absl::Duration timeout);
  // Stops polling and the timer; the attempt is decided.
  void StopWatching();
  // Queues the callback with `result`; a failure closes the socket (in that task).
  void Finish(absl::StatusOr<int> result);
  absl::Status ConnectError(int error) const;

  EventLoop* const loop_;
  const SocketAddress address_;
  // Loop-thread-only state.
  Callback done_;
  int fd_ = -1;
  bool registered_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  TimerId timer_ = 0;
};

}  // namespace gev

#endif  // GEV_NET_CONNECTOR_H_
