#include "server/internal/datagram_endpoint.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "eventloop/log.h"
#include "net/socket_address.h"

namespace gev::datagram_internal {

namespace {

// How long a Unix receiver may read nothing while datagrams wait for it.
constexpr uint64_t kStalledReceiverMs = 1000;

// What a connected socket's pending error (an ICMP message from the peer's host) looks like
// when a receive or a send takes it; the error queue reports it.
bool IsPeerError(int error) {
  return error == ECONNREFUSED || error == EHOSTUNREACH || error == ENETUNREACH ||
         error == EHOSTDOWN || error == ENONET || error == EPROTO;
}

}  // namespace

absl::StatusOr<SocketAddress> ParseDatagramAddress(const std::string& network,
                                                   const std::string& address) {
  if (network == "unixgram") {
    if (address.empty()) {  // Unnamed: the kernel picks an abstract name when it binds.
      sockaddr_storage unnamed{};
      unnamed.ss_family = AF_UNIX;
      return SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&unnamed),
                                         sizeof(sa_family_t));
    }
    return SocketAddress::Unix(address);
  }
  // The address parser names its families after TCP's.
  NetworkType type;
  if (network == "udp") {
    type = NetworkType::kTcp;
  } else if (network == "udp4") {
    type = NetworkType::kTcp4;
  } else if (network == "udp6") {
    type = NetworkType::kTcp6;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "a datagram socket's network is udp, udp4, udp6 or unixgram, not \"", network, "\""));
  }
  absl::StatusOr<InetAddress> parsed = InetAddress::Parse(address, type);
  if (!parsed.ok()) return parsed.status();
  if (type == NetworkType::kTcp4 && parsed->family() != AF_INET) {
    return absl::InvalidArgumentError("udp4 with an IPv6 address");
  }
  if (type == NetworkType::kTcp6 && parsed->family() != AF_INET6) {
    return absl::InvalidArgumentError("udp6 with an IPv4 address");
  }
  return SocketAddress(*parsed);
}

absl::StatusOr<int> OpenBoundDatagramSocket(const SocketAddress& address, bool reuse_port) {
  if (address.is_unix()) return OpenUnixDatagramSocket(address);
  return OpenDatagramSocket(address.inet(), reuse_port);
}

DatagramEndpoint::DatagramEndpoint(DatagramHandler* handler, const DatagramOptions& options,
                                   std::shared_ptr<EventLoop> loop, int fd, Owner owner,
                                   bool connected, InetAddress connected_peer)
    : handler_(handler),
      options_(options),
      loop_(std::move(loop)),
      fd_(fd),
      owner_(owner),
      connected_(connected),
      connected_peer_(connected_peer),
      reader_(options.batch, options.gro ? kMaxDatagram : options.max_datagram),
      writer_(options.max_queued_bytes) {
  writer_.set_gso(options.gso);
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  unix_ = ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &length) == 0 &&
          local.ss_family == AF_UNIX;
  waits_by_timer_ = unix_ && !connected;
  // Views of the handler's Reply::View storage are copied here until the batch is flushed.
  arena_.reserve(reader_.batch() * std::min<size_t>(reader_.slot_size(), 4096));
}

DatagramEndpoint::~DatagramEndpoint() {
  if (fd_ >= 0) ::close(fd_);
}

Interest DatagramEndpoint::WantedInterest() const {
  // Writability while datagrams wait for room (reading pauses meanwhile, so that replies do
  // not pile up; or nothing, when a timer is what waits), readability otherwise.
  if (!writer_.blocked()) return Interest::kRead;
  const Interest write = waits_by_timer_ ? Interest::kNone : Interest::kWrite;
  return ReadsWhileBlocked() ? static_cast<Interest>(static_cast<uint8_t>(write) |
                                                     static_cast<uint8_t>(Interest::kRead))
                             : write;
}

bool DatagramEndpoint::ReadsWhileBlocked() const {
  // A Unix socket reads on while it waits, up to half its cap: its peer may be waiting for it
  // to read (two gev endpoints, each with replies for the other). Past that it pauses too, and
  // the kernel holds its senders back; a cycle that still closes is broken by the drop of
  // what waits for a receiver that reads nothing for a second.
  return unix_ && writer_.kept_bytes() < options_.max_queued_bytes / 2;
}

void DatagramEndpoint::DropForAStalledReceiver() {
  if (writer_.empty() || stalled_since_ms_ == 0) return;
  const uint64_t now = loop_->NowMs();
  if (now - stalled_since_ms_ < kStalledReceiverMs) return;
  // The first datagram's receiver has read nothing for a second: what waits for it goes, so
  // that the datagrams behind it, to others, can. The next receiver gets a second of its own.
  socklen_t length = 0;
  const sockaddr_storage* first = writer_.first_peer(&length);
  if (first == nullptr) return;
  const sockaddr_storage stalled = *first;
  const size_t dropped = writer_.DropTo(stalled, length);
  stalled_since_ms_ = writer_.empty() ? 0 : now;
  retry_delay_ms_ = 0;
  send_refused_.Add(dropped);
  handler_->OnSendError(
      InetAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&stalled), length),
      absl::DeadlineExceededError(absl::StrCat(
          SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&stalled), length)
              .ToString(),
          " read nothing for ", kStalledReceiverMs, " ms: ", dropped,
          " datagrams to it dropped")));
}

void DatagramEndpoint::RetryLater() {
  if (retry_pending_) return;
  retry_pending_ = true;
  retry_delay_ms_ = retry_delay_ms_ == 0 ? 1 : std::min(2 * retry_delay_ms_, 64);
  // Weak: a timer still pending when the loop ends must not keep the endpoint (which keeps
  // the loop).
  std::weak_ptr<DatagramEndpoint> weak = weak_from_this();
  loop_->RunAfter(absl::Milliseconds(retry_delay_ms_), [weak] {
    std::shared_ptr<DatagramEndpoint> self = weak.lock();
    if (self == nullptr) return;
    self->retry_pending_ = false;
    if (self->finished_) return;
    self->DropForAStalledReceiver();
    self->Flush();
  });
}

absl::Status DatagramEndpoint::Register() {
  if (connected_) {
    // ICMP errors from the peer's host go to the error queue as well as the pending error, so
    // that none is lost to a sendmmsg that sent some datagrams and then took it.
    int one = 1;
    if (connected_peer_.family() == AF_INET6) {
      if (::setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one) != 0) {
        return absl::InternalError(absl::StrCat("IPV6_RECVERR: ", strerror(errno)));
      }
    }
    // On an IPv6 socket, for a peer reached over IPv4 (a mapped address); refused by none.
    (void)::setsockopt(fd_, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
  }
  Interest wanted = WantedInterest();  // A send may have come first.
  absl::Status added = loop_->AddHandler(fd_, wanted, this);
  if (added.ok()) {
    registered_ = true;
    registered_interest_ = wanted;
  }
  return added;
}

void DatagramEndpoint::Unregister() {
  if (!registered_) return;
  // Refused only for a descriptor not registered.
  (void)loop_->RemoveHandler(fd_, this);
  registered_ = false;
}

void DatagramEndpoint::UpdateInterest() {
  if (!registered_) return;  // Not yet registered, or finished.
  Interest wanted = WantedInterest();
  if (wanted == registered_interest_) return;
  // Refused only for a descriptor not registered, which this one is.
  (void)loop_->UpdateInterest(fd_, wanted, this);
  registered_interest_ = wanted;
}

void DatagramEndpoint::HandleEvent(const PollEvent& event) {
  // A callback may let go of the last owner (a client destroyed in its own callback): the
  // endpoint lives until this event is handled.
  std::shared_ptr<DatagramEndpoint> self = shared_from_this();
  if (event.error && connected_) ReadErrors();
  if (event.writable || writer_.blocked()) Flush();
  // Once stopping, nothing more is read: only what waits is sent.
  if ((event.readable || event.error) && (!writer_.blocked() || ReadsWhileBlocked()) &&
      !finishing_) {
    ReadBatches();
  }
}

void DatagramEndpoint::ReadErrors() {
  // Bounded: a peer that keeps answering with errors does not hold the loop.
  for (int i = 0; i < 64 && !finished_; ++i) {
    char data[64];
    alignas(cmsghdr) char control[512];
    iovec iov{data, sizeof data};
    msghdr header{};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    if (::recvmsg(fd_, &header, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg != nullptr;
         cmsg = CMSG_NXTHDR(&header, cmsg)) {
      const bool v4 = cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_RECVERR;
      const bool v6 = cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_RECVERR;
      if (!v4 && !v6) continue;
      sock_extended_err error{};
      std::memcpy(&error, CMSG_DATA(cmsg), sizeof error);
      // The local stack's own errors (a datagram too long) were the send's, reported by it.
      if (error.ee_origin != SO_EE_ORIGIN_ICMP && error.ee_origin != SO_EE_ORIGIN_ICMP6) continue;
      icmp_errors_.Add(1);
      handler_->OnSendError(connected_peer_,
                            absl::UnavailableError(absl::StrCat(
                                "ICMP from the peer's side: ",
                                strerror(static_cast<int>(error.ee_errno)))));
    }
  }
}

void DatagramEndpoint::ReadBatches() {
  for (size_t round = 0; round < options_.batches_per_event && !finishing_; ++round) {
    const int n = reader_.Read(fd_);
    if (n < 0) {
      // A connected socket's pending ICMP error, taken by this read: the error queue reports
      // it, and the datagrams behind it are still there.
      if (connected_ && IsPeerError(-n)) continue;
      // An unconnected UDP socket reports no ICMP errors by default; whatever this is, the
      // datagrams behind it are still there to read next time.
      Log(LogSeverity::kWarning,
          absl::StrCat("udp loop ", owner_.index, ": recvmmsg: ", strerror(-n)));
      break;
    }
    if (n == 0) break;
    receive_calls_.Add(1);
    if (reader_.coalesced_reads() != last_coalesced_reads_) {
      gro_reads_.Add(reader_.coalesced_reads() - last_coalesced_reads_);
      last_coalesced_reads_ = reader_.coalesced_reads();
    }
    const uint32_t drops = reader_.kernel_drops();
    if (drops != last_kernel_drops_) {
      kernel_drops_.Add(drops - last_kernel_drops_);
      last_kernel_drops_ = drops;
    }
    in_batch_ = true;
    for (int i = 0; i < n; ++i) {
      if (finished_) {
        // Stopped from a callback: what is left of the batch goes to no one, counted.
        dropped_at_stop_.Add(static_cast<uint64_t>(n - i));
        break;
      }
      Handle(reader_.at(static_cast<size_t>(i)));
    }
    in_batch_ = false;
    if (finished_) return;
    Flush();
    // Blocked: UDP reads on once the replies are out (the kernel drops what it cannot hold,
    // counted); a Unix socket reads on below half its cap (see ReadsWhileBlocked).
    if (writer_.blocked() && !ReadsWhileBlocked()) break;
    if (static_cast<size_t>(n) < reader_.batch()) break;
  }
}

void DatagramEndpoint::Handle(const DatagramReader::Datagram& received) {
  // A connected socket hears only its peer; its replies carry no address.
  const sockaddr_storage* reply_to = connected_ ? nullptr : received.peer;
  const socklen_t reply_to_length = connected_ ? 0 : received.peer_length;
  InetAddress peer = connected_ ? connected_peer_
                                : InetAddress::FromSockaddr(
                                      reinterpret_cast<const sockaddr*>(received.peer),
                                      received.peer_length);
  // A Unix socket's sender: the path (or, after a NUL, the abstract name) the kernel gave.
  std::string_view peer_path;
  if (received.peer->ss_family == AF_UNIX &&
      received.peer_length > offsetof(sockaddr_un, sun_path)) {
    const auto* unix_peer = reinterpret_cast<const sockaddr_un*>(received.peer);
    size_t length = received.peer_length - offsetof(sockaddr_un, sun_path);
    // A path's length may count its terminating NUL; an abstract name's may not be cut.
    if (unix_peer->sun_path[0] != '\0') length = strnlen(unix_peer->sun_path, length);
    peer_path = std::string_view(unix_peer->sun_path, length);
  }
  Datagram datagram{received.payload, peer,         *loop_,   owner_.index,
                    owner_.server,    owner_.client, peer_path};
  received_.Add(1);
  bytes_received_.Add(received.payload.size());
  if (received.truncated) {
    truncated_.Add(1);
    handler_->OnTruncated(datagram, received.length);
    return;
  }
  Reply reply = handler_->OnDatagram(datagram);
  if (reply.kind() == Reply::Kind::kNothing) return;
  // A Unix sender that is not bound has no address a reply could go to.
  if (!connected_ && (received.peer_length == 0 ||
                      (received.peer->ss_family == AF_UNIX &&
                       received.peer_length <= offsetof(sockaddr_un, sun_path)))) {
    Refused(peer, absl::FailedPreconditionError(
                      "the sender's socket is not bound: no reply can reach it"));
    return;
  }
  absl::Status queued;
  switch (reply.kind()) {
    case Reply::Kind::kNothing:
      return;
    case Reply::Kind::kFromBuffer:
      // The slot stays as it is until the batch is flushed.
      queued = writer_.Queue(
          reply_to, reply_to_length,
          received.payload.substr(0, std::min(reply.from_buffer(), received.payload.size())));
      break;
    case Reply::Kind::kView: {
      // The handler may rewrite that storage on its next call: copied into the arena, which
      // the flush empties.
      std::string_view bytes = reply.bytes();
      if (arena_.size() + bytes.size() > arena_.capacity()) Flush();
      if (arena_.size() + bytes.size() <= arena_.capacity()) {
        size_t at = arena_.size();
        arena_.append(bytes);
        queued = writer_.Queue(reply_to, reply_to_length,
                               std::string_view(arena_).substr(at, bytes.size()));
      } else {
        queued = writer_.QueueOwned(reply_to, reply_to_length, std::string(bytes));
      }
      break;
    }
    case Reply::Kind::kOwned:
      queued = writer_.QueueOwned(reply_to, reply_to_length, reply.TakeOwned());
      break;
  }
  if (!queued.ok()) Refused(peer, queued);
}

void DatagramEndpoint::Refused(const InetAddress& peer, const absl::Status& why) {
  if (absl::IsResourceExhausted(why)) {
    queue_refused_.Add(1);
  } else {
    send_refused_.Add(1);
    handler_->OnSendError(peer, why);
  }
}

void DatagramEndpoint::SendOwned(std::string bytes, const sockaddr_storage* peer,
                                 socklen_t peer_length) {
  if (finished_) {  // A send that passed its check as the endpoint stopped.
    dropped_at_stop_.Add(1);
    return;
  }
  // Datagrams already waiting for room: this one waits behind them, since a send now would
  // only be refused again.
  const bool waiting = writer_.blocked();
  absl::Status queued = writer_.QueueOwned(peer, peer_length, std::move(bytes));
  if (!queued.ok()) {
    Refused(peer != nullptr ? InetAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(peer),
                                                        peer_length)
                            : connected_peer_,
            queued);
    return;
  }
  if (!in_batch_ && !waiting) Flush();
}

void DatagramEndpoint::Flush() {
  if (finished_) return;  // What was left was counted as dropped at stop.
  if (writer_.empty()) {
    arena_.clear();
    retry_delay_ms_ = 0;
    stalled_since_ms_ = 0;
    UpdateInterest();  // A drop may have emptied a blocked writer.
    return;
  }
  const uint64_t calls_before = writer_.send_calls();
  const uint64_t gso_before = writer_.gso_messages();
  DatagramWriter::Flushed flushed = writer_.Flush(fd_);
  send_calls_.Add(writer_.send_calls() - calls_before);
  gso_messages_.Add(writer_.gso_messages() - gso_before);
  if (!flushed.gso_refused.ok()) {
    gso_refusals_.Add(1);
    Log(LogSeverity::kWarning,
        absl::StrCat("udp loop ", owner_.index, ": GSO refused (", flushed.gso_refused.ToString(),
                     "); the run went as single datagrams, and ",
                     writer_.gso() ? "so will runs as wide or wider" : "GSO is off from now on"));
  }
  sent_.Add(flushed.sent);
  bytes_sent_.Add(flushed.bytes);
  if (flushed.refused > 0) {
    send_refused_.Add(flushed.refused);
    // Once per flush, with the first refusal's peer and reason; all are counted.
    InetAddress peer = connected_peer_;
    if (flushed.first_error_peer_length > 0) {
      peer = InetAddress::FromSockaddr(
          reinterpret_cast<const sockaddr*>(&flushed.first_error_peer),
          flushed.first_error_peer_length);
    }
    handler_->OnSendError(peer, flushed.first_error);
  }
  arena_.clear();  // Whatever the writer still holds it has copied.
  if (flushed.blocked) blocked_flushes_.Add(1);
  if (!writer_.blocked()) {
    retry_delay_ms_ = 0;
    stalled_since_ms_ = 0;
  } else if (waits_by_timer_) {
    // Progress (or a refusal) ends the head's wait: the next datagram's receiver gets a second
    // of its own, and the retries start again at 1 ms.
    if (flushed.sent > 0 || flushed.refused > 0 || stalled_since_ms_ == 0) {
      stalled_since_ms_ = loop_->NowMs();
    }
    if (flushed.sent > 0) retry_delay_ms_ = 0;
    RetryLater();
  }
  // From what the writer holds, not from this flush: OnSendError above may have sent, and
  // that flush may have blocked.
  UpdateInterest();
}

void DatagramEndpoint::Finish(int tries, std::function<void()> finished) {
  if (finished_) return;  // Finished by an earlier call, which ran its own `finished`.
  finishing_ = true;
  Flush();
  if (!writer_.empty() && tries > 0) {
    loop_->RunAfter(absl::Milliseconds(5),
                    [self = shared_from_this(), tries, finished = std::move(finished)]() mutable {
                      self->Finish(tries - 1, std::move(finished));
                    });
    return;
  }
  dropped_at_stop_.Add(writer_.Discard());
  finished_ = true;
  Unregister();
  if (finished) finished();
}

DatagramLoopStats DatagramEndpoint::Snapshot() const {
  DatagramLoopStats stats;
  stats.received = received_.Get();
  stats.bytes_received = bytes_received_.Get();
  stats.sent = sent_.Get();
  stats.bytes_sent = bytes_sent_.Get();
  stats.receive_calls = receive_calls_.Get();
  stats.send_calls = send_calls_.Get();
  stats.truncated = truncated_.Get();
  stats.kernel_drops = kernel_drops_.Get();
  stats.send_refused = send_refused_.Get();
  stats.queue_refused = queue_refused_.Get();
  stats.blocked_flushes = blocked_flushes_.Get();
  stats.dropped_at_stop = dropped_at_stop_.Get();
  stats.gso_messages = gso_messages_.Get();
  stats.gso_refusals = gso_refusals_.Get();
  stats.gro_reads = gro_reads_.Get();
  stats.icmp_errors = icmp_errors_.Get();
  return stats;
}

}  // namespace gev::datagram_internal
