#include "server/internal/handoff.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventloop/log.h"
#include "net/socket_address.h"
#include "net/socket_ops.h"

namespace gev::server_internal {
namespace {

constexpr size_t kRecordBytes = 64;
constexpr absl::string_view kMagic = "gev-handoff 1 ";
// Descriptors per record: under SCM_MAX_FD (253), the most one message may carry.
constexpr size_t kDescriptorsPerRecord = 200;
// Listeners handed over in all: ServerOptions::num_loops' limit.
constexpr size_t kMostListeners = 1024;
// How long the running process waits for a requester's next record.
constexpr absl::Duration kSessionTimeout = absl::Seconds(10);

using Record = char[kRecordBytes];

void FillRecord(absl::string_view text, Record& record) {
  std::memset(record, 0, kRecordBytes);
  std::memcpy(record, text.data(), std::min(text.size(), kRecordBytes - 1));
}

// The record's text after the magic; empty when the record is not ours.
absl::string_view RecordBody(const Record& record) {
  absl::string_view text(record, ::strnlen(record, kRecordBytes));
  if (text.substr(0, kMagic.size()) != kMagic) return {};
  return text.substr(kMagic.size());
}

// One record, and `fds` with it. The socket's buffer is empty or nearly (a few records in
// all), so a send that does not take the whole record at once is a failure, not a wait.
absl::Status SendRecord(int fd, absl::string_view text, const int* fds, size_t fd_count) {
  Record record;
  FillRecord(text, record);
  iovec data{record, kRecordBytes};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kDescriptorsPerRecord)];
  if (fd_count > 0) {
    std::memset(control, 0, sizeof(control));
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
    std::memcpy(CMSG_DATA(header), fds, sizeof(int) * fd_count);
  }
  ssize_t sent;
  do {
    sent = ::sendmsg(fd, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return absl::ErrnoToStatus(errno, "handoff: send");
  if (static_cast<size_t>(sent) != kRecordBytes) {
    return absl::UnavailableError("handoff: a record was sent in part");
  }
  return absl::OkStatus();
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
}

// One record and the descriptors that came with it (close-on-exec), blocking up to the
// socket's receive timeout.
absl::Status ReceiveRecord(int fd, Record& record, std::vector<int>* fds) {
  iovec data{record, kRecordBytes};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t got;
  do {
    got = ::recvmsg(fd, &message, MSG_WAITALL | MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  int error = errno;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); got >= 0 && header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* at = CMSG_DATA(header);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, at + i * sizeof(int), sizeof(int));
      fds->push_back(received);
    }
  }
  if (got < 0) {
    if (error == EAGAIN || error == EWOULDBLOCK) {
      return absl::DeadlineExceededError("handoff: no answer in time");
    }
    return absl::ErrnoToStatus(error, "handoff: receive");
  }
  if ((message.msg_flags & MSG_CTRUNC) != 0) {
    return absl::FailedPreconditionError("handoff: more descriptors came than fit");
  }
  if (got == 0) return absl::UnavailableError("handoff: the peer closed the connection");
  if (static_cast<size_t>(got) != kRecordBytes) {
    return absl::DeadlineExceededError("handoff: a record came in part");
  }
  return absl::OkStatus();
}

// Whether `peer` (SO_PEERCRED of the other end) runs as this process's user.
absl::Status CheckSameUser(const absl::StatusOr<PeerCredentials>& peer, const char* who) {
  if (!peer.ok()) return peer.status();
  if (peer->uid != ::geteuid()) {
    return absl::PermissionDeniedError(absl::StrCat("handoff: the ", who, " runs as uid ",
                                                    peer->uid, ", this process as ",
                                                    ::geteuid()));
  }
  return absl::OkStatus();
}

void SetTimeouts(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(std::max(timeout, absl::Milliseconds(1)));
  // Best effort: without them the exchange blocks for as long as the peer takes.
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

}  // namespace

// --- The new process's side --------------------------------------------------------------

HandedOverListeners::HandedOverListeners(HandedOverListeners&& other) noexcept
    : channel_(std::exchange(other.channel_, -1)),
      from_pid_(other.from_pid_),
      given_(other.given_),
      listeners_(std::move(other.listeners_)) {
  other.listeners_.clear();
}

HandedOverListeners::~HandedOverListeners() {
  for (const InheritedSocket& socket : listeners_) ::close(socket.fd);
  if (channel_ >= 0) ::close(channel_);  // Without "ready": the sender goes on serving.
}

absl::Status HandedOverListeners::ConfirmTakeover() {
  if (channel_ < 0) return absl::FailedPreconditionError("handoff: already confirmed");
  absl::Status status = SendRecord(channel_, absl::StrCat(kMagic, "ready"), nullptr, 0);
  Record record;
  std::vector<int> unexpected;
  if (status.ok()) status = ReceiveRecord(channel_, record, &unexpected);
  CloseAll(unexpected);
  if (status.ok() && (RecordBody(record) != "done" || !unexpected.empty())) {
    status = absl::FailedPreconditionError("handoff: expected \"done\"");
  }
  ::close(channel_);
  channel_ = -1;
  return status;
}

absl::StatusOr<HandedOverListeners> RequestListeners(const std::string& path,
                                                     absl::Duration timeout) {
  return RequestListeners(path, timeout, sockets::kStartingListenerGrace);
}

absl::StatusOr<HandedOverListeners> RequestListeners(const std::string& path,
                                                     absl::Duration timeout,
                                                     absl::Duration stale_grace) {
  absl::StatusOr<SocketAddress> address = SocketAddress::Parse("unix", path);
  if (!address.ok()) return address.status();
  sockaddr_storage storage;
  socklen_t length = address->Fill(&storage);
  // A refused connect means a file with no listener behind it: a process gone, or one that
  // has bound the path and not yet listened (bind makes the file first). The second passes
  // within moments, so a refusal is tried again for a short while before the file is taken
  // for stale.
  int channel = -1;
  absl::StatusOr<int> connected =
      sockets::RetryWhileRefused(std::min(timeout, stale_grace), [&]() -> absl::StatusOr<int> {
        channel = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (channel < 0) return absl::ErrnoToStatus(errno, "handoff: socket");
        SetTimeouts(channel, timeout);
        if (::connect(channel, reinterpret_cast<const sockaddr*>(&storage), length) == 0) return 0;
        int error = errno;
        ::close(channel);
        channel = -1;
        return error;
      });
  if (!connected.ok()) return connected.status();
  const int error = *connected;
  HandedOverListeners result(channel, -1, false, {});
  if (channel < 0) {
    if (error == ENOENT || error == ECONNREFUSED) {
      return absl::UnavailableError(absl::StrCat(
          "handoff: no server at ", path,
          error == ENOENT ? " (no socket file)" : " (a stale socket file: its process is gone)"));
    }
    return absl::ErrnoToStatus(error, absl::StrCat("handoff: connect ", path));
  }
  absl::Status status = CheckSameUser(sockets::GetPeerCredentials(channel), "server");
  if (!status.ok()) return status;
  status = SendRecord(channel, absl::StrCat(kMagic, "request ", ::getpid()), nullptr, 0);
  if (!status.ok()) return status;

  Record record;
  std::vector<int> fds;
  status = ReceiveRecord(channel, record, &fds);
  absl::string_view body = RecordBody(record);
  std::vector<absl::string_view> words = absl::StrSplit(body, ' ');
  size_t total = 0;
  int64_t from_pid = 0;
  if (status.ok() && words.size() == 2 && words[0] == "refused") {
    status = absl::FailedPreconditionError(absl::StrCat("handoff: refused: ", words[1]));
  } else if (status.ok() &&
             (words.size() != 4 || words[0] != "listeners" || !absl::SimpleAtoi(words[1], &total) ||
              !absl::SimpleAtoi(words[2], &from_pid) || total == 0 || total > kMostListeners ||
              (words[3] != "given" && words[3] != "bound"))) {
    status = absl::FailedPreconditionError(
        absl::StrCat("handoff: ", path, " does not speak the handoff protocol"));
  }
  while (status.ok() && fds.size() < total) {
    size_t before = fds.size();
    status = ReceiveRecord(channel, record, &fds);
    if (status.ok() && (RecordBody(record) != "more" || fds.size() == before)) {
      status = absl::FailedPreconditionError("handoff: a record without descriptors");
    }
  }
  if (status.ok() && fds.size() != total) {
    status = absl::FailedPreconditionError(
        absl::StrCat("handoff: ", fds.size(), " descriptors came, ", total, " were announced"));
  }
  std::vector<InheritedSocket> listeners;
  for (size_t i = 0; status.ok() && i < fds.size(); ++i) {
    absl::StatusOr<InheritedSocket> socket = DescribeSocket(fds[i]);
    if (!socket.ok()) {
      status = socket.status();
    } else if (socket->type != SOCK_STREAM || !socket->listening) {
      status = absl::FailedPreconditionError(absl::StrCat(
          "handoff: descriptor ", i, " (", socket->address.ToString(), ") is no listener"));
    } else {
      listeners.push_back(std::move(*socket));
    }
  }
  if (!status.ok()) {
    CloseAll(fds);
    return status;
  }
  return HandedOverListeners(std::exchange(result.channel_, -1), static_cast<pid_t>(from_pid),
                             words[3] == "given", std::move(listeners));
}

// --- The running process's side ----------------------------------------------------------

// One requester's connection: its request, the listeners sent, then its "ready" (or its end).
class HandoffService::Session final : public EventHandler {
 public:
  // `peer_pid`: the requester, as the kernel names it (SO_PEERCRED).
  Session(HandoffService* service, int fd, int64_t peer_pid)
      : service_(service), fd_(fd), requester_pid_(peer_pid) {}
  ~Session() override {
    if (registered_) (void)service_->loop_->RemoveHandler(fd_, this);  // Closing unregisters anyway.
    if (timer_ != 0) service_->loop_->Cancel(timer_);
    ::close(fd_);
  }

  absl::Status Start() {
    absl::Status status = service_->loop_->AddHandler(fd_, Interest::kRead, this);
    if (!status.ok()) return status;
    registered_ = true;
    timer_ = service_->loop_->RunAfter(kSessionTimeout, [this] {
      timer_ = 0;
      service_->EndSession(absl::DeadlineExceededError("the requester went quiet"));
    });
    return absl::OkStatus();
  }

  void HandleEvent(const PollEvent&) override {
    while (true) {
      ssize_t n = ::read(fd_, record_ + have_, kRecordBytes - have_);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) {
        // Gone before "ready": it took nothing for itself (it failed to start, say), or it
        // never asked (a probe: whether a live socket holds the path).
        service_->EndSession(absl::UnavailableError(
            !sent_ ? absl::StrCat("pid ", requester_pid_, " left without asking for anything")
                   : absl::StrCat("pid ", requester_pid_,
                                  " went away before it said it was serving")));
        return;  // This session is gone.
      }
      have_ += static_cast<size_t>(n);
      if (have_ < kRecordBytes) continue;
      have_ = 0;
      if (!OnRecord()) return;  // Ended.
    }
  }

 private:
  // Returns false once the session has ended (it is destroyed then).
  bool OnRecord() {
    absl::string_view body = RecordBody(record_);
    if (!sent_) {
      std::vector<absl::string_view> words = absl::StrSplit(body, ' ');
      if (words.size() != 2 || words[0] != "request") {
        Refuse("bad-request");
        service_->EndSession(absl::FailedPreconditionError(
            "a peer that does not speak the handoff protocol"));
        return false;
      }
      absl::Status status = SendListeners();
      if (!status.ok()) {
        service_->EndSession(status);
        return false;
      }
      sent_ = true;
      // From here the requester takes as long as it takes to start serving (its Start() may
      // come late); it ends the session by closing, if it fails.
      service_->loop_->Cancel(timer_);
      timer_ = 0;
      return true;
    }
    if (body != "ready") {
      service_->EndSession(absl::FailedPreconditionError("expected \"ready\""));
      return false;
    }
    // The path is the successor's from "done" on: it binds it as soon as it reads that.
    service_->StopListening();
    absl::Status done = SendRecord(fd_, absl::StrCat(kMagic, "done"), nullptr, 0);
    if (!done.ok()) {
      // It said ready, so it serves; without "done" it leaves the path alone.
      Log(LogSeverity::kWarning, absl::StrCat("handoff: telling pid ", requester_pid_,
                                              " the path is free: ", done.message()));
    }
    service_->TakenOver(static_cast<pid_t>(requester_pid_));
    return false;
  }

  absl::Status SendListeners() {
    std::vector<int> fds = service_->callbacks_.listeners();
    if (fds.empty() || fds.size() > kMostListeners) {
      Refuse("no-listeners");
      return absl::FailedPreconditionError("no listeners to hand over");
    }
    size_t first = std::min(fds.size(), kDescriptorsPerRecord);
    absl::Status status = SendRecord(
        fd_,
        absl::StrCat(kMagic, "listeners ", fds.size(), " ", ::getpid(), " ",
                     service_->callbacks_.given ? "given" : "bound"),
        fds.data(), first);
    for (size_t at = first; status.ok() && at < fds.size(); at += kDescriptorsPerRecord) {
      size_t count = std::min(fds.size() - at, kDescriptorsPerRecord);
      status = SendRecord(fd_, absl::StrCat(kMagic, "more"), fds.data() + at, count);
    }
    return status;
  }

  void Refuse(absl::string_view why) {
    // Best effort: the requester learns why, or sees the connection close.
    (void)SendRecord(fd_, absl::StrCat(kMagic, "refused ", why), nullptr, 0);
  }

  HandoffService* const service_;
  const int fd_;
  bool registered_ = false;
  TimerId timer_ = 0;
  Record record_;
  size_t have_ = 0;
  bool sent_ = false;
  int64_t requester_pid_ = -1;
};

absl::StatusOr<std::unique_ptr<HandoffService>> HandoffService::Create(
    EventLoop* loop, const std::string& path, bool replace, Callbacks callbacks,
    absl::Duration stale_grace) {
  absl::StatusOr<SocketAddress> address = SocketAddress::Parse("unix", path);
  if (!address.ok()) return address.status();
  if (replace && !address->is_abstract()) (void)::unlink(path.c_str());  // ENOENT is fine.
  absl::StatusOr<std::unique_ptr<Acceptor>> acceptor =
      Acceptor::Create(loop, *address, /*reuse_port=*/false, stale_grace);
  if (!acceptor.ok()) return acceptor.status();
  return std::unique_ptr<HandoffService>(
      new HandoffService(loop, path, std::move(*acceptor), std::move(callbacks)));
}

HandoffService::HandoffService(EventLoop* loop, std::string path,
                               std::unique_ptr<Acceptor> acceptor, Callbacks callbacks)
    : loop_(loop),
      path_(std::move(path)),
      acceptor_(std::move(acceptor)),
      callbacks_(std::move(callbacks)) {
  acceptor_->set_new_connection_callback([this](int fd, const InetAddress&) { OnRequester(fd); });
}

HandoffService::~HandoffService() { session_.reset(); }

absl::Status HandoffService::Start() { return acceptor_->Listen(); }

void HandoffService::OnRequester(int fd) {
  absl::StatusOr<PeerCredentials> peer = sockets::GetPeerCredentials(fd);
  absl::Status status = CheckSameUser(peer, "requester");
  if (status.ok() && session_ != nullptr) {
    status = absl::UnavailableError("another handoff is under way");
  }
  if (!status.ok()) {
    // Best effort, as Refuse: the requester learns why, or sees the close.
    (void)SendRecord(fd, absl::StrCat(kMagic, "refused ",
                                      status.code() == absl::StatusCode::kPermissionDenied
                                          ? "wrong-user"
                                          : "busy"),
                     nullptr, 0);
    ::close(fd);
    Log(LogSeverity::kWarning, absl::StrCat("handoff on ", path_, " refused: ", status.message()));
    return;
  }
  session_ = std::make_unique<Session>(this, fd, peer->pid);
  status = session_->Start();
  if (!status.ok()) EndSession(status);
}

void HandoffService::EndSession(const absl::Status& why) {
  Log(LogSeverity::kWarning,
      absl::StrCat("handoff on ", path_, " abandoned, still serving: ", why.message()));
  session_.reset();
}

void HandoffService::StopListening() {
  if (acceptor_ == nullptr) return;
  acceptor_->KeepSocketFile();
  acceptor_.reset();
}

void HandoffService::TakenOver(pid_t pid) {
  session_.reset();
  Log(LogSeverity::kInfo,
      absl::StrCat("handoff on ", path_, ": pid ", pid, " serves the listeners now; draining"));
  callbacks_.taken_over(pid);  // May destroy this service: nothing of it is touched after.
}

}  // namespace gev::server_internal
