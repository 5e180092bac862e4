#include "net/connector.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "net/socket_ops.h"

namespace gev {

std::shared_ptr<Connector> Connector::Start(EventLoop* loop, const SocketAddress& address,
                                            absl::Duration timeout, Callback done) {
  loop->AssertInLoopThread();
  auto connector = std::make_shared<Connector>(PrivateTag{}, loop, address, std::move(done));
  connector->Begin(timeout);
  return connector;
}

Connector::Connector(PrivateTag, EventLoop* loop, const SocketAddress& address, Callback done)
    : loop_(loop), address_(address), done_(std::move(done)) {}

Connector::~Connector() {
  // An owner that let go without Cancel(): the loop must not call a freed handler.
  if (registered_ && loop_->IsInLoopThread()) (void)loop_->RemoveHandler(fd_, this);
  // Reached with the socket still open if the owner let go early or the loop stopped before
  // a queued task ran.
  if (fd_ >= 0) ::close(fd_);
}

absl::Status Connector::ConnectError(int error) const {
  std::string what = absl::StrCat("connect ", address_.ToString());
  switch (error) {
    case ECONNREFUSED:
      return absl::UnavailableError(absl::StrCat(what, ": connection refused"));
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
      return absl::UnavailableError(absl::StrCat(what, ": unreachable (", strerror(error), ")"));
    case EAGAIN:
      // connect(2) on a Unix socket whose listener's backlog is full.
      return absl::UnavailableError(absl::StrCat(what, ": the listener's backlog is full"));
    case ETIMEDOUT:
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    case ENOENT:
      return absl::NotFoundError(absl::StrCat(what, ": no such socket file"));
    default:
      return absl::ErrnoToStatus(error, what);
  }
}

void Connector::Begin(absl::Duration timeout) {
  absl::StatusOr<int> fd = sockets::CreateNonBlockingSocket(address_.family());
  if (!fd.ok()) {
    Finish(fd.status());
    return;
  }
  fd_ = *fd;
  sockaddr_storage storage;
  socklen_t length = address_.Fill(&storage);
  int rc;
  do {
    rc = ::connect(fd_, reinterpret_cast<const sockaddr*>(&storage), length);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) {  // Unix sockets, and sometimes loopback TCP, connect at once.
    Finish(fd_);
    return;
  }
  if (errno != EINPROGRESS) {
    Finish(ConnectError(errno));
    return;
  }
  absl::Status watched = loop_->AddHandler(fd_, Interest::kWrite, this);
  if (!watched.ok()) {
    Finish(watched);
    return;
  }
  registered_ = true;
  if (timeout > absl::ZeroDuration()) {
    timer_ = loop_->RunAfter(timeout, [weak = weak_from_this(), timeout] {
      if (std::shared_ptr<Connector> self = weak.lock()) self->OnTimeout(timeout);
    });
  }
}

void Connector::OnTimeout(absl::Duration timeout) {
  timer_ = 0;
  if (finished_) return;
  Finish(absl::DeadlineExceededError(absl::StrCat("connect ", address_.ToString(),
                                                  ": no answer within ",
                                                  absl::FormatDuration(timeout))));
}

void Connector::HandleEvent(const PollEvent& event) {
  loop_->DcheckInLoopThread();
  if (finished_) return;
  int error = sockets::PendingError(fd_);
  if (error == 0 && event.error) error = event.error_code != 0 ? event.error_code : EIO;
  if (error != 0) {
    Finish(ConnectError(error));
    return;
  }
  if (!address_.is_unix()) {
    // A TCP connect to a free local port can pick that very port as its own and "succeed"
    // (simultaneous open): there is no server on the other end.
    absl::StatusOr<InetAddress> local = sockets::LocalAddress(fd_);
    absl::StatusOr<InetAddress> peer = sockets::PeerAddress(fd_);
    if (local.ok() && peer.ok() && local->ToString() == peer->ToString()) {
      Finish(absl::UnavailableError(
          absl::StrCat("connect ", address_.ToString(), ": connected to itself")));
      return;
    }
    if (!peer.ok()) {  // Writable but not connected: the attempt failed after all.
      Finish(ConnectError(ECONNREFUSED));
      return;
    }
  }
  Finish(fd_);
}

void Connector::StopWatching() {
  if (registered_) {
    registered_ = false;
    // Fails only if the descriptor was not registered; then there is nothing to stop.
    (void)loop_->RemoveHandler(fd_, this);
  }
  if (timer_ != 0) {
    loop_->Cancel(timer_);
    timer_ = 0;
  }
}

void Connector::Finish(absl::StatusOr<int> result) {
  if (finished_) return;
  finished_ = true;
  StopWatching();
  // Refused only by a finished loop: the destructor then closes the socket.
  (void)loop_->QueueInLoop([self = shared_from_this(), result = std::move(result)]() mutable {
    if (!result.ok() || self->cancelled_) {
      if (self->fd_ >= 0) ::close(self->fd_);
      self->fd_ = -1;
      if (!self->cancelled_) self->done_(std::move(result));
      self->done_ = nullptr;
      return;
    }
    self->fd_ = -1;  // Handed over.
    Callback done = std::move(self->done_);
    done(std::move(result));
  });
}

void Connector::Cancel() {
  loop_->AssertInLoopThread();
  if (cancelled_) return;
  cancelled_ = true;
  if (!finished_) {
    // A failure nobody hears of; the task closes the socket.
    Finish(absl::CancelledError("connect cancelled"));
  }
}

}  // namespace gev
