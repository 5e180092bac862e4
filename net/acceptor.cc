#include "net/acceptor.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <shared_mutex>

#include "absl/strings/str_cat.h"
#include "eventloop/log.h"
#include "net/inherited_sockets.h"
#include "net/socket_ops.h"

namespace gev {
namespace {

constexpr absl::Duration kExhaustionBackoff = absl::Milliseconds(50);

// Descriptor numbers are shared by every thread of the process. Shedding frees the spare,
// accepts into the freed number and takes the spare back; another acceptor's accept4 in between
// (ReusePort mode: one acceptor per loop) would take the number, and this acceptor would be
// left without a spare and its backlog unserved. Accepts hold this lock shared; shedding and
// taking a spare back hold it exclusively. Descriptors that other code opens meanwhile can still
// take the number: then the back-off below tries again.
std::shared_mutex& DescriptorTableLock() {
  static std::shared_mutex* lock = new std::shared_mutex;  // Never destroyed: used at exit.
  return *lock;
}

// The listener's interest could not change: nobody to return that to, so it is logged.
void LogIfFailed(const absl::Status& status, const char* what) {
  if (!status.ok()) Log(LogSeverity::kWarning, absl::StrCat(what, ": ", status.ToString()));
}

int OpenSpareDescriptor() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

int AcceptNonBlocking(int listen_fd, sockaddr_storage* peer, socklen_t* length) {
#ifdef SOCK_NONBLOCK
  return ::accept4(listen_fd, reinterpret_cast<sockaddr*>(peer), length,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
  int fd = ::accept(listen_fd, reinterpret_cast<sockaddr*>(peer), length);
  if (fd >= 0 && !sockets::SetNonBlockingCloseOnExec(fd).ok()) {
    ::close(fd);
    errno = ECONNABORTED;
    return -1;
  }
  return fd;
#endif
}

}  // namespace

absl::StatusOr<std::unique_ptr<Acceptor>> Acceptor::Create(EventLoop* loop,
                                                           const SocketAddress& address,
                                                           bool reuse_port,
                                                           absl::Duration stale_grace) {
  absl::StatusOr<int> fd = sockets::Listen(address, reuse_port, SOMAXCONN, stale_grace);
  if (!fd.ok()) return fd.status();
  absl::StatusOr<SocketAddress> bound = sockets::LocalSocketAddress(*fd);
  if (!bound.ok()) {
    ::close(*fd);
    return bound.status();
  }
  return std::unique_ptr<Acceptor>(new Acceptor(loop, *fd, *bound));
}

absl::StatusOr<std::unique_ptr<Acceptor>> Acceptor::Adopt(EventLoop* loop, int fd) {
  absl::StatusOr<InheritedSocket> socket = DescribeSocket(fd);
  if (!socket.ok()) return socket.status();
  if (socket->type != SOCK_STREAM || !socket->listening) {
    return absl::FailedPreconditionError(
        absl::StrCat("descriptor ", fd, " (", socket->address.ToString(),
                     "): not a listening stream socket"));
  }
  absl::Status status = sockets::SetNonBlockingCloseOnExec(fd);
  if (!status.ok()) return status;
  auto acceptor = std::unique_ptr<Acceptor>(new Acceptor(loop, fd, socket->address));
  // Whoever made the socket owns its file (systemd, a predecessor still draining): it stays.
  acceptor->KeepSocketFile();
  return acceptor;
}

Acceptor::Acceptor(EventLoop* loop, int listen_fd, const SocketAddress& listen_address)
    : loop_(loop),
      listen_fd_(listen_fd),
      listen_address_(listen_address),
      spare_fd_(OpenSpareDescriptor()) {
  struct stat file {};
  if (listen_address_.is_unix() && !listen_address_.is_abstract() &&
      !listen_address_.unix_path().empty() &&
      ::stat(listen_address_.unix_path().c_str(), &file) == 0) {
    socket_file_device_ = static_cast<uint64_t>(file.st_dev);
    socket_file_inode_ = static_cast<uint64_t>(file.st_ino);
  }
}

Acceptor::~Acceptor() {
  if (listening_) {
    loop_->AssertInLoopThread();
    // Fails only if the listener was never registered; closing it below unregisters it anyway.
    (void)loop_->RemoveHandler(listen_fd_, this);
  }
  if (backoff_timer_ != 0) loop_->Cancel(backoff_timer_);
  // Removed while still listening: until the close, a newcomer's bind fails and its probe finds
  // this listener alive, so the file checked here is still this acceptor's own.
  struct stat file {};
  if (socket_file_inode_ != 0 && ::stat(listen_address_.unix_path().c_str(), &file) == 0 &&
      static_cast<uint64_t>(file.st_dev) == socket_file_device_ &&
      static_cast<uint64_t>(file.st_ino) == socket_file_inode_) {
    // Best effort: a file left behind is replaced by the next listener as stale.
    (void)::unlink(listen_address_.unix_path().c_str());
  }
  ::close(listen_fd_);
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

absl::Status Acceptor::Listen() {
  loop_->AssertInLoopThread();
  absl::Status status = loop_->AddHandler(listen_fd_, Interest::kRead, this);
  if (status.ok()) listening_ = true;
  return status;
}

void Acceptor::HandleEvent(const PollEvent&) {
  loop_->DcheckInLoopThread();
  // Waiting for a slot, yet polled: only if stopping the polling failed (logged). The gate has
  // this acceptor already; asking again would count it twice.
  if (waiting_for_gate_) return;
  while (true) {
    if (gate_ != nullptr && !gate_->TryReserve()) {
      if (PauseForGate()) return;
      continue;  // A slot freed while pausing.
    }
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    int fd;
    {
      std::shared_lock<std::shared_mutex> lock(DescriptorTableLock());
      fd = AcceptNonBlocking(listen_fd_, &peer, &length);
    }
    if (fd >= 0) {
      accepted_.fetch_add(1, std::memory_order_relaxed);
      InetAddress peer_address = InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&peer),
                                                           length);
      if (new_connection_) {
        new_connection_(fd, peer_address);  // With the slot.
      } else {
        ::close(fd);
        if (gate_ != nullptr) gate_->Unreserve();
      }
      continue;
    }
    int accept_error = errno;
    if (gate_ != nullptr) gate_->Unreserve();  // A shed below takes no slot either.
    switch (accept_error) {
      case EAGAIN:
#if EAGAIN != EWOULDBLOCK
      case EWOULDBLOCK:
#endif
        return;
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
      case EPERM:
        continue;  // That one connection is gone; the next may be fine.
      case EMFILE:
      case ENFILE:
        if (!ShedOneConnection()) return;
        continue;
      default:
        return;  // ENOBUFS, ENOMEM: transient; level-triggered polling brings us back.
    }
  }
}

bool Acceptor::ShedOneConnection() {
  if (spare_fd_ >= 0) {
    std::unique_lock<std::shared_mutex> lock(DescriptorTableLock());
    ::close(spare_fd_);
    spare_fd_ = -1;
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd >= 0) {
      ::close(fd);
      shed_.fetch_add(1, std::memory_order_relaxed);
    }
    spare_fd_ = OpenSpareDescriptor();
    spares_reopened_.fetch_add(spare_fd_ >= 0 ? 1 : 0, std::memory_order_relaxed);
    if (fd >= 0 && spare_fd_ >= 0) return true;
  }
  // No spare to spend: stop polling the listener for a while rather than spin on it.
  if (listening_ && backoff_timer_ == 0) {
    LogIfFailed(loop_->UpdateInterest(listen_fd_, Interest::kNone, this), "pausing the listener");
    backoff_timer_ = loop_->RunAfter(kExhaustionBackoff, [this] { ResumeAfterBackoff(); });
  }
  return false;
}

void Acceptor::ResumeAfterBackoff() {
  backoff_timer_ = 0;
  if (spare_fd_ < 0) {
    std::unique_lock<std::shared_mutex> lock(DescriptorTableLock());
    spare_fd_ = OpenSpareDescriptor();
  }
  if (waiting_for_gate_) return;  // ResumeAccepting() polls again.
  absl::Status resumed = loop_->UpdateInterest(listen_fd_, Interest::kRead, this);
  if (resumed.ok()) return;
  // Nobody to return this to; paused, the listener would stay deaf, so it tries again.
  LogIfFailed(resumed, "resuming the listener");
  backoff_timer_ = loop_->RunAfter(kExhaustionBackoff, [this] { ResumeAfterBackoff(); });
}

bool Acceptor::PauseForGate() {
  // Stop polling first: once the gate has this acceptor, ResumeAccepting() may run next.
  if (backoff_timer_ == 0) {
    LogIfFailed(loop_->UpdateInterest(listen_fd_, Interest::kNone, this), "pausing the listener");
  }
  waiting_for_gate_ = true;
  if (gate_->WaitForSlot()) {
    gate_pauses_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  waiting_for_gate_ = false;
  if (backoff_timer_ == 0) {
    LogIfFailed(loop_->UpdateInterest(listen_fd_, Interest::kRead, this), "resuming the listener");
  }
  return false;
}

bool Acceptor::ResumeAccepting() {
  loop_->AssertInLoopThread();
  if (!waiting_for_gate_) return false;
  waiting_for_gate_ = false;
  if (listening_ && backoff_timer_ == 0) {
    // Level-triggered: clients already waiting in the backlog make the next poll report it.
    absl::Status resumed = loop_->UpdateInterest(listen_fd_, Interest::kRead, this);
    if (!resumed.ok()) {
      // Nobody to return this to; the back-off's retry polls again.
      LogIfFailed(resumed, "resuming the listener");
      backoff_timer_ = loop_->RunAfter(kExhaustionBackoff, [this] { ResumeAfterBackoff(); });
    }
  }
  return true;
}

}  // namespace gev
