// -----------------------------------------------------------------------------
// File: server/internal/handoff.h
// -----------------------------------------------------------------------------
//
// Listening sockets handed from a running server to its successor over a Unix socket
// (ServerOptions::handoff_path), so that a restart refuses and resets nobody: the sockets, with
// the clients waiting in their backlogs, never close.
//
// The exchange, in fixed 64-byte records (so that each read takes exactly one record and the
// descriptors that came with it):
//
//   new process                              running process (HandoffService)
//   connect(path), check it runs as our uid
//   "gev-handoff 1 request <pid>"     ->     checks the peer's uid, then
//                                     <-     "gev-handoff 1 listeners <n> <pid> <origin>"
//                                            + descriptors
//   describe each: a listening stream,       (or "gev-handoff 1 refused <why>")
//   serve them, then
//   "gev-handoff 1 ready"             ->     closes its handoff socket (the path is free),
//                                     <-     "gev-handoff 1 done", then stops accepting and
//   serves the path itself                   drains (TakenOver callback)
//
// Until "ready" both processes accept on the same sockets, which loses nothing; if the new
// process goes away before it (it failed to start), the running one carries on serving. The
// new process takes the path only after "done": until then the running one may still need it.
//
// Thread safety: RequestListeners and HandedOverListeners are for one thread; a HandoffService
// lives on its loop's thread (create anywhere, Start and destroy on the loop).

#ifndef GEV_SERVER_INTERNAL_HANDOFF_H_
#define GEV_SERVER_INTERNAL_HANDOFF_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "net/acceptor.h"
#include "net/inherited_sockets.h"
#include "net/socket_ops.h"

namespace gev::server_internal {

// The new process's side: listeners received, and the channel still open to the process that
// sent them. Destroying it without ConfirmTakeover() closes the received descriptors not
// released and tells the sender nothing was taken (it goes on serving).
class HandedOverListeners {
 public:
  HandedOverListeners(HandedOverListeners&& other) noexcept;
  HandedOverListeners& operator=(HandedOverListeners&&) = delete;
  ~HandedOverListeners();

  const std::vector<InheritedSocket>& listeners() const { return listeners_; }
  pid_t from_pid() const { return from_pid_; }
  // The sender was given its listeners (systemd's, a parent's) rather than bound them where
  // its options said: they are served wherever they are bound.
  bool given() const { return given_; }
  // The descriptors are the caller's from now on (they are no longer closed here).
  void ReleaseListeners() { listeners_.clear(); }
  // HandedOverListeners::ConfirmTakeover() — "ready": this process accepts on the listeners;
  // the sender stops and drains. OK once it answered "done" (its handoff path is free: this
  // process may take it); otherwise why not, and the sender may be serving still. Closes the
  // channel.
  absl::Status ConfirmTakeover();

 private:
  friend absl::StatusOr<HandedOverListeners> RequestListeners(const std::string& path,
                                                             absl::Duration timeout,
                                                             absl::Duration stale_grace);
  HandedOverListeners(int channel, pid_t from_pid, bool given,
                      std::vector<InheritedSocket> listeners)
      : channel_(channel), from_pid_(from_pid), given_(given), listeners_(std::move(listeners)) {}

  int channel_;
  pid_t from_pid_;
  bool given_;
  std::vector<InheritedSocket> listeners_;
};

// RequestListeners() — asks the server at `path` for its listeners, waiting at most `timeout`
// for each step. Unavailable when nobody serves there (no file; a stale file of a process
// gone, which refuses connects for sockets::kStartingListenerGrace: a server between its bind
// and its listen refuses only for a moment), PermissionDenied when the server runs as another
// user (or refused our user), FailedPrecondition for a refusal or a peer that does not speak the protocol, and
// DeadlineExceeded when it does not answer.
absl::StatusOr<HandedOverListeners> RequestListeners(const std::string& path,
                                                     absl::Duration timeout);
// With how long a refusing path is given before it is taken for stale (tests).
absl::StatusOr<HandedOverListeners> RequestListeners(const std::string& path,
                                                     absl::Duration timeout,
                                                     absl::Duration stale_grace);

// The running process's side, on one loop: answers one request at a time; hands over at most
// once.
class HandoffService {
 public:
  struct Callbacks {
    // The descriptors to hand over, at the moment of a request.
    absl::AnyInvocable<std::vector<int>()> listeners;
    // Whether they were given to this server (see HandedOverListeners::given).
    bool given = false;
    // The new process (`pid`) said ready: stop accepting and drain. The service has ended;
    // it may be destroyed from here.
    absl::AnyInvocable<void(pid_t pid)> taken_over;
  };

  // HandoffService::Create() — binds `path`. `replace`: the file is removed first even if a
  // live socket holds it (the predecessor that just handed over, whose service is ending);
  // otherwise only a stale file is replaced, after `stale_grace` of refusals (see
  // sockets::BindUnix: zero when the caller's own request found nobody serving there, so the
  // loop that calls this does not wait for it).
  static absl::StatusOr<std::unique_ptr<HandoffService>> Create(
      EventLoop* loop, const std::string& path, bool replace, Callbacks callbacks,
      absl::Duration stale_grace = sockets::kStartingListenerGrace);
  ~HandoffService();

  // Starts answering. Loop thread only.
  absl::Status Start();
  const std::string& path() const { return path_; }

 private:
  class Session;
  HandoffService(EventLoop* loop, std::string path, std::unique_ptr<Acceptor> acceptor,
                 Callbacks callbacks);
  void OnRequester(int fd);
  // Closes the handoff socket, leaving the path (a file's or an abstract name) to the successor.
  void StopListening();
  void EndSession(const absl::Status& why);
  void TakenOver(pid_t pid);

  EventLoop* const loop_;
  const std::string path_;
  std::unique_ptr<Acceptor> acceptor_;  // Null once handed over: no further requests.
  Callbacks callbacks_;
  std::unique_ptr<Session> session_;  // The request being answered, if any.
};

}  // namespace gev::server_internal

#endif  // GEV_SERVER_INTERNAL_HANDOFF_H_
