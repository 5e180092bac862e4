#include "net/datagram_io.h"

#include <errno.h>
#include <netinet/udp.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "net/socket_ops.h"

namespace gev {

namespace {

// sendmmsg and recvmmsg take at most this many messages per call (UIO_MAXIOV).
constexpr size_t kMaxPerCall = 1024;
// Datagrams one UDP_SEGMENT message may carry: the kernel's UDP_MAX_SEGMENTS, which later
// kernels raised to 128.
constexpr size_t kMaxSegments = 64;
// The UDP payload every IPv6 path carries unfragmented (its 1,280-byte minimum MTU less 48
// bytes of headers): a GSO segment this small that is refused is not refused for its size.
constexpr size_t kNarrowestPathPayload = 1232;
// Entries one Flush call considers per sendmmsg, so that its scratch stays small.
constexpr size_t kMaxEntriesPerCall = 4096;
// The most one UDP datagram (or one GSO message) carries over IPv4: 65,535 less the IPv4 and
// UDP headers.
constexpr size_t kMaxIpv4Payload = 65507;

// Tries of one datagram that keep meeting a connected socket's pending ICMP errors.
constexpr int kMaxPendingErrorRetries = 16;

bool IsPendingErrorOfAConnectedSocket(int error) {
  return error == ECONNREFUSED || error == EHOSTUNREACH || error == ENETUNREACH ||
         error == EHOSTDOWN || error == ENONET || error == EPROTO || error == EMSGSIZE;
}

// An IPv4 peer, as itself or as an IPv4-mapped IPv6 address (a dual-stack socket's).
bool IsIpv4Peer(const sockaddr_storage& peer) {
  if (peer.ss_family == AF_INET) return true;
  if (peer.ss_family != AF_INET6) return false;
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(peer);
  return IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr);
}

bool SamePeer(const sockaddr_storage& a, socklen_t a_length, const sockaddr_storage& b,
              socklen_t b_length) {
  return a_length == b_length && std::memcmp(&a, &b, a_length) == 0;
}

absl::Status ErrnoStatus(int error, absl::string_view what) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (error) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
      code = absl::StatusCode::kUnavailable;
      break;
    case EMSGSIZE:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case ENOBUFS:
    case ENOMEM:
      code = absl::StatusCode::kResourceExhausted;
      break;
    case EACCES:
    case EPERM:
      code = absl::StatusCode::kPermissionDenied;
      break;
    default:
      break;
  }
  return absl::Status(code, absl::StrCat(what, ": ", strerror(error)));
}

}  // namespace

absl::StatusOr<int> OpenDatagramSocket(const InetAddress& address, bool reuse_port) {
  int fd = ::socket(address.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket");
  auto fail = [fd](absl::Status status) {
    ::close(fd);
    return status;
  };
  int one = 1;
  if (reuse_port) {
    absl::Status reuse = sockets::SetReusePort(fd, true);
    if (!reuse.ok()) return fail(reuse);
  }
  if (address.family() == AF_INET6) {
    int zero = 0;  // Dual stack: an IPv6 any-address takes IPv4 too.
    if (::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) != 0) {
      return fail(ErrnoStatus(errno, "IPV6_V6ONLY"));
    }
  }
  // The count of datagrams dropped for want of buffer rides on each receive.
  if (::setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) != 0) {
    return fail(ErrnoStatus(errno, "SO_RXQ_OVFL"));
  }
  if (::bind(fd, address.sockaddr(), address.length()) != 0) {
    return fail(ErrnoStatus(errno, absl::StrCat("bind ", address.ToString())));
  }
  return fd;
}

absl::StatusOr<int> OpenUnixDatagramSocket(const SocketAddress& address) {
  if (!address.is_unix()) return absl::InvalidArgumentError("not a Unix socket address");
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket");
  absl::Status bound;
  if (address.unix_path().empty()) {
    // Only the family: the kernel binds an abstract name of its own (Linux's autobind).
    sockaddr_storage storage{};
    storage.ss_family = AF_UNIX;
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&storage), sizeof(sa_family_t)) != 0) {
      bound = ErrnoStatus(errno, "bind (autobind)");
    }
  } else {
    bound = sockets::BindUnix(fd, address, SOCK_DGRAM);
  }
  if (!bound.ok()) {
    ::close(fd);
    return bound;
  }
  return fd;
}

absl::Status SetSocketBuffers(int fd, size_t receive_bytes, size_t send_bytes) {
  struct Buffer {
    size_t bytes;
    int option;
    int forced;
    const char* name;
  };
  for (const Buffer& buffer : {Buffer{receive_bytes, SO_RCVBUF, SO_RCVBUFFORCE, "SO_RCVBUF"},
                               Buffer{send_bytes, SO_SNDBUF, SO_SNDBUFFORCE, "SO_SNDBUF"}}) {
    if (buffer.bytes == 0) continue;
    // The kernel doubles what it is given (for its overhead): ask for half.
    const int value = static_cast<int>(std::min<size_t>(buffer.bytes / 2 + 1, 1 << 30));
    // Past the system's cap only with CAP_NET_ADMIN; without it, as much as the cap allows.
    if (::setsockopt(fd, SOL_SOCKET, buffer.forced, &value, sizeof value) == 0) continue;
    if (::setsockopt(fd, SOL_SOCKET, buffer.option, &value, sizeof value) != 0) {
      return ErrnoStatus(errno, buffer.name);
    }
  }
  return absl::OkStatus();
}

absl::Status EnableGro(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) != 0) {
    return absl::UnimplementedError(absl::StrCat("UDP_GRO: ", strerror(errno)));
  }
  return absl::OkStatus();
}

DatagramReader::DatagramReader(size_t batch, size_t slot_size)
    : batch_(std::clamp<size_t>(batch, 1, kMaxPerCall)),
      slot_size_(std::clamp<size_t>(slot_size, 1, kMaxDatagram)),
      slots_(new char[batch_ * slot_size_]),
      peers_(batch_),
      iovecs_(batch_),
      headers_(batch_),
      datagrams_(batch_) {
  // SO_RXQ_OVFL's count and UDP_GRO's segment size.
  control_size_ = CMSG_SPACE(sizeof(uint32_t)) + CMSG_SPACE(sizeof(int));
  control_.reset(new char[batch_ * control_size_]);
  for (size_t i = 0; i < batch_; ++i) {
    iovecs_[i] = {slots_.get() + i * slot_size_, slot_size_};
  }
}

int DatagramReader::Read(int fd) {
  for (size_t i = 0; i < batch_; ++i) {
    msghdr& header = headers_[i].msg_hdr;
    header = {};
    header.msg_name = &peers_[i];
    header.msg_namelen = sizeof(sockaddr_storage);
    header.msg_iov = &iovecs_[i];
    header.msg_iovlen = 1;
    header.msg_control = control_.get() + i * control_size_;
    header.msg_controllen = control_size_;
    headers_[i].msg_len = 0;
  }
  int n;
  do {
    // MSG_TRUNC: a cut datagram's msg_len is its whole length, not what the slot took.
    n = ::recvmmsg(fd, headers_.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT | MSG_TRUNC,
                   nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
  count_ = 0;
  for (int i = 0; i < n; ++i) {
    const msghdr& header = headers_[i].msg_hdr;
    size_t segment = 0;
    for (const cmsghdr* control = CMSG_FIRSTHDR(&header); control != nullptr;
         control = CMSG_NXTHDR(const_cast<msghdr*>(&header), const_cast<cmsghdr*>(control))) {
      if (control->cmsg_level == SOL_SOCKET && control->cmsg_type == SO_RXQ_OVFL) {
        std::memcpy(&kernel_drops_, CMSG_DATA(control), sizeof kernel_drops_);
      } else if (control->cmsg_level == IPPROTO_UDP && control->cmsg_type == UDP_GRO) {
        int size = 0;
        std::memcpy(&size, CMSG_DATA(control), sizeof size);
        if (size > 0) segment = static_cast<size_t>(size);
      }
    }
    Split(static_cast<size_t>(i), headers_[i].msg_len, segment, &peers_[i], header.msg_namelen);
  }
  return static_cast<int>(count_);
}

// One message: one datagram, or (GRO) a run of `segment`-byte datagrams, the last shorter.
void DatagramReader::Split(size_t slot, size_t length, size_t segment,
                           const sockaddr_storage* peer, socklen_t peer_length) {
  const char* data = slots_.get() + slot * slot_size_;
  const size_t held = std::min(length, slot_size_);  // MSG_TRUNC: length may be more.
  if (segment == 0 || segment >= length) segment = length;
  if (segment < length) ++coalesced_reads_;
  size_t offset = 0;
  do {
    if (count_ == datagrams_.size()) datagrams_.emplace_back();
    Datagram& datagram = datagrams_[count_++];
    datagram.peer = peer;
    datagram.peer_length = peer_length;
    const size_t whole = std::min(segment, length - offset);
    if (offset + whole <= held) {
      datagram.payload = std::string_view(data + offset, whole);
      datagram.length = whole;
      datagram.truncated = false;
      offset += whole;
      continue;
    }
    // Cut by the slot: one datagram, or the rest of a coalesced run, reported as one
    // truncated datagram with the length of what was lost with it.
    datagram.payload = std::string_view(data + offset, held - offset);
    datagram.length = length - offset;
    datagram.truncated = true;
    offset = length;
  } while (offset < length);
}

DatagramWriter::DatagramWriter(size_t max_queued_bytes) : max_queued_bytes_(max_queued_bytes) {}

absl::Status DatagramWriter::Admit(size_t length) const {
  if (length > kMaxDatagram) {
    return absl::InvalidArgumentError(
        absl::StrCat("a datagram of ", length, " bytes: the most is ", kMaxDatagram));
  }
  if (kept_bytes_ + length > max_queued_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the socket's buffer is full and ", kept_bytes_, " bytes already wait to be sent"));
  }
  return absl::OkStatus();
}

DatagramWriter::Entry& DatagramWriter::Append(const sockaddr_storage* peer,
                                              socklen_t peer_length) {
  entries_.emplace_back();
  Entry& entry = entries_.back();
  entry.has_peer = peer != nullptr;
  if (peer != nullptr) {
    std::memcpy(&entry.peer, peer, std::min<size_t>(peer_length, sizeof entry.peer));
    entry.peer_length = peer_length;
  }
  return entry;
}

absl::Status DatagramWriter::Queue(const sockaddr_storage* peer, socklen_t peer_length,
                                   std::string_view first, std::string_view second) {
  absl::Status admitted = Admit(first.size() + second.size());
  if (!admitted.ok()) return admitted;
  Entry& entry = Append(peer, peer_length);
  entry.pieces[0] = first;
  entry.pieces[1] = second;
  entry.length = first.size() + second.size();
  return absl::OkStatus();
}

absl::Status DatagramWriter::QueueOwned(const sockaddr_storage* peer, socklen_t peer_length,
                                        std::string bytes) {
  absl::Status admitted = Admit(bytes.size());
  if (!admitted.ok()) return admitted;
  Entry& entry = Append(peer, peer_length);
  entry.length = bytes.size();
  entry.owned = std::move(bytes);
  entry.is_owned = true;
  kept_bytes_ += entry.length;
  return absl::OkStatus();
}

size_t DatagramWriter::DropTo(const sockaddr_storage& peer, socklen_t peer_length) {
  size_t dropped = 0;
  size_t kept = head_;
  for (size_t i = head_; i < entries_.size(); ++i) {
    Entry& entry = entries_[i];
    if (entry.has_peer && SamePeer(entry.peer, entry.peer_length, peer, peer_length)) {
      if (entry.is_owned) kept_bytes_ -= entry.length;
      ++dropped;
      continue;
    }
    if (kept != i) entries_[kept] = std::move(entry);
    ++kept;
  }
  entries_.resize(kept);
  if (empty()) blocked_ = false;
  return dropped;
}

size_t DatagramWriter::Discard() {
  const size_t dropped = queued();
  entries_.clear();
  head_ = 0;
  kept_bytes_ = 0;
  blocked_ = false;
  return dropped;
}

size_t DatagramWriter::RunLength(size_t first, size_t end) const {
  const Entry& head = entries_[first];
  const size_t segment = head.length;
  if (!gso_ || segment == 0 || segment > gso_segment_limit_) return 1;
  // The kernel takes one IPv6 message of 65,527 bytes; IPv4 (a mapped address too, or a
  // connected socket, whose family the writer does not know) 65,507.
  const size_t most =
      head.has_peer && !IsIpv4Peer(head.peer) && head.peer.ss_family == AF_INET6
          ? kMaxDatagram
          : kMaxIpv4Payload;
  size_t count = 1;
  size_t total = segment;
  while (first + count < end && count < kMaxSegments) {
    const Entry& next = entries_[first + count];
    if (next.length == 0 || next.length > segment || total + next.length > most) break;
    if (next.has_peer != head.has_peer ||
        (head.has_peer && !SamePeer(head.peer, head.peer_length, next.peer, next.peer_length))) {
      break;
    }
    total += next.length;
    ++count;
    if (next.length < segment) break;  // Only the last segment may be shorter.
  }
  return count;
}

void DatagramWriter::Refuse(size_t count, int error, Flushed& flushed) {
  Entry& first = entries_[head_];
  if (flushed.first_error.ok()) {
    flushed.first_error = ErrnoStatus(error, "sendmmsg");
    flushed.first_error_peer = first.peer;
    flushed.first_error_peer_length = first.has_peer ? first.peer_length : 0;
  }
  for (size_t i = 0; i < count; ++i) {
    Entry& refused = entries_[head_ + i];
    if (refused.is_owned) kept_bytes_ -= refused.length;
    refused.owned = std::string();
  }
  head_ += count;
  flushed.refused += count;
}

DatagramWriter::Flushed DatagramWriter::Flush(int fd) {
  Flushed flushed;
  // The entry last sent again after a connected socket's pending error (see below).
  size_t retried = static_cast<size_t>(-1);
  int retries = 0;
  const size_t control_words = CMSG_SPACE(sizeof(uint16_t)) / sizeof(uint64_t);
  while (head_ < entries_.size()) {
    const size_t end = head_ + std::min(entries_.size() - head_, kMaxEntriesPerCall);
    // Scratch sized before any pointer into it is taken.
    iovecs_.resize(2 * (end - head_));
    headers_.resize(std::min(end - head_, kMaxPerCall));
    messages_.clear();
    if (gso_) control_.resize(headers_.size() * control_words);
    size_t next = head_;
    size_t iovec_count = 0;
    while (next < end && messages_.size() < kMaxPerCall) {
      const size_t count = RunLength(next, end);
      const size_t index = messages_.size();
      messages_.push_back({next, count});
      msghdr& header = headers_[index].msg_hdr;
      header = {};
      const Entry& head = entries_[next];
      if (head.has_peer) {
        header.msg_name = const_cast<sockaddr_storage*>(&head.peer);
        header.msg_namelen = head.peer_length;
      }
      header.msg_iov = iovecs_.data() + iovec_count;
      for (size_t i = next; i < next + count; ++i) {
        Entry& entry = entries_[i];
        if (entry.is_owned) {
          if (!entry.owned.empty()) iovecs_[iovec_count++] = {entry.owned.data(), entry.length};
          continue;
        }
        for (std::string_view piece : entry.pieces) {
          if (!piece.empty()) iovecs_[iovec_count++] = {const_cast<char*>(piece.data()), piece.size()};
        }
      }
      header.msg_iovlen = static_cast<size_t>(iovecs_.data() + iovec_count - header.msg_iov);
      if (count > 1) {
        header.msg_control = &control_[index * control_words];
        header.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        cmsghdr* control = CMSG_FIRSTHDR(&header);
        control->cmsg_level = IPPROTO_UDP;
        control->cmsg_type = UDP_SEGMENT;
        control->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t segment = static_cast<uint16_t>(head.length);
        std::memcpy(CMSG_DATA(control), &segment, sizeof segment);
      }
      headers_[index].msg_len = 0;
      next += count;
    }
    int n;
    do {
      n = ::sendmmsg(fd, headers_.data(), static_cast<unsigned>(messages_.size()), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    ++send_calls_;
    if (n > 0) {
      for (int m = 0; m < n; ++m) {
        const Message& message = messages_[static_cast<size_t>(m)];
        if (message.count > 1) ++gso_messages_;
        for (size_t i = message.first; i < message.first + message.count; ++i) {
          Entry& entry = entries_[i];
          flushed.bytes += entry.length;
          if (entry.is_owned) kept_bytes_ -= entry.length;
          entry.owned = std::string();
        }
        flushed.sent += message.count;
        head_ = message.first + message.count;
      }
      continue;
    }
    const int error = n < 0 ? errno : EAGAIN;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      // The rest waits for the socket to drain: the views go stale after this call, so copy.
      for (size_t i = head_; i < entries_.size(); ++i) {
        Entry& entry = entries_[i];
        if (entry.is_owned) continue;
        entry.owned.reserve(entry.length);
        entry.owned.append(entry.pieces[0]).append(entry.pieces[1]);
        entry.pieces[0] = entry.pieces[1] = {};
        entry.is_owned = true;
        kept_bytes_ += entry.length;
      }
      flushed.blocked = true;
      blocked_ = true;
      return flushed;
    }
    // On a connected socket an ICMP error from the peer's side waits as the socket's pending
    // error, and the next send takes it: it says nothing about this datagram, which is sent
    // again, and the error is for whoever reads the error queue (IP_RECVERR). Each try takes
    // one pending error, and one comes only from a datagram sent earlier, so a few tries do;
    // EMSGSIZE (an ICMP "fragmentation needed", or this datagram too long) is tried once more.
    if (!entries_[head_].has_peer && IsPendingErrorOfAConnectedSocket(error)) {
      if (retried != head_) {
        retried = head_;
        retries = 0;
      }
      if (retries < (error == EMSGSIZE ? 1 : kMaxPendingErrorRetries)) {
        ++retries;
        continue;
      }
    }
    const Message& refused = messages_.front();
    if (refused.count > 1 && (error == EINVAL || error == EIO || error == EMSGSIZE ||
                              error == ENOPROTOOPT || error == EOPNOTSUPP)) {
      // GSO itself was refused: the run goes again as single datagrams. A path narrower than
      // the segments (EINVAL or EMSGSIZE for segments wider than any path must carry) rules
      // out runs of that size and wider; anything else (a device without checksum offload,
      // SO_NO_CHECK, a kernel without UDP_SEGMENT) rules out GSO on this writer.
      const size_t segment = entries_[refused.first].length;
      if ((error == EINVAL || error == EMSGSIZE) && segment > kNarrowestPathPayload) {
        gso_segment_limit_ = std::min(gso_segment_limit_, segment - 1);
      } else {
        gso_ = false;
      }
      ++gso_refusals_;
      flushed.gso_refused = ErrnoStatus(error, absl::StrCat("UDP_SEGMENT of ", segment, " bytes"));
      continue;
    }
    // sendmmsg reports an error only for the first message it tried: that one is refused (a
    // datagram too long, a peer the kernel cannot reach) and the rest go on.
    Refuse(refused.count, error, flushed);
  }
  entries_.clear();  // Capacity kept.
  head_ = 0;
  blocked_ = false;
  return flushed;
}

}  // namespace gev
