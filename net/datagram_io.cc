#include "net/datagram_io.h"

#include <errno.h>
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

DatagramReader::DatagramReader(size_t batch, size_t slot_size)
    : batch_(std::clamp<size_t>(batch, 1, kMaxPerCall)),
      slot_size_(std::clamp<size_t>(slot_size, 1, kMaxDatagram)),
      slots_(new char[batch_ * slot_size_]),
      peers_(batch_),
      iovecs_(batch_),
      headers_(batch_),
      datagrams_(batch_) {
  control_size_ = CMSG_SPACE(sizeof(uint32_t));
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
  for (int i = 0; i < n; ++i) {
    const msghdr& header = headers_[i].msg_hdr;
    Datagram& datagram = datagrams_[i];
    const size_t length = headers_[i].msg_len;
    datagram.truncated = (header.msg_flags & MSG_TRUNC) != 0;
    // What the slot holds is at most its size.
    datagram.length = length;
    datagram.payload =
        std::string_view(slots_.get() + i * slot_size_, std::min(length, slot_size_));
    datagram.peer = &peers_[i];
    datagram.peer_length = header.msg_namelen;
    for (const cmsghdr* control = CMSG_FIRSTHDR(&header); control != nullptr;
         control = CMSG_NXTHDR(const_cast<msghdr*>(&header), const_cast<cmsghdr*>(control))) {
      if (control->cmsg_level == SOL_SOCKET && control->cmsg_type == SO_RXQ_OVFL) {
        std::memcpy(&kernel_drops_, CMSG_DATA(control), sizeof kernel_drops_);
      }
    }
  }
  return n;
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

size_t DatagramWriter::Discard() {
  const size_t dropped = queued();
  entries_.clear();
  head_ = 0;
  kept_bytes_ = 0;
  return dropped;
}

DatagramWriter::Flushed DatagramWriter::Flush(int fd) {
  Flushed flushed;
  while (head_ < entries_.size()) {
    const size_t count = std::min(entries_.size() - head_, kMaxPerCall);
    headers_.resize(count);
    iovecs_.resize(2 * count);
    for (size_t i = 0; i < count; ++i) {
      Entry& entry = entries_[head_ + i];
      msghdr& header = headers_[i].msg_hdr;
      header = {};
      if (entry.has_peer) {
        header.msg_name = &entry.peer;
        header.msg_namelen = entry.peer_length;
      }
      size_t pieces = 0;
      if (entry.is_owned) {
        iovecs_[2 * i] = {entry.owned.data(), entry.owned.size()};
        pieces = 1;
      } else {
        for (std::string_view piece : entry.pieces) {
          if (piece.empty()) continue;
          iovecs_[2 * i + pieces++] = {const_cast<char*>(piece.data()), piece.size()};
        }
      }
      header.msg_iov = &iovecs_[2 * i];
      header.msg_iovlen = pieces;
      headers_[i].msg_len = 0;
    }
    int n;
    do {
      n = ::sendmmsg(fd, headers_.data(), static_cast<unsigned>(count), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    ++send_calls_;
    if (n > 0) {
      for (int i = 0; i < n; ++i) {
        Entry& entry = entries_[head_ + static_cast<size_t>(i)];
        flushed.bytes += entry.length;
        if (entry.is_owned) kept_bytes_ -= entry.length;
        entry.owned = std::string();
      }
      head_ += static_cast<size_t>(n);
      flushed.sent += static_cast<size_t>(n);
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
      return flushed;
    }
    // sendmmsg reports an error only for the first datagram it tried: that one is refused
    // (a datagram too long, a peer the kernel cannot reach) and the rest go on.
    Entry& refused = entries_[head_];
    if (refused.is_owned) kept_bytes_ -= refused.length;
    refused.owned = std::string();
    ++head_;
    ++flushed.refused;
    if (flushed.first_error.ok()) {
      flushed.first_error = ErrnoStatus(error, "sendmmsg");
      flushed.first_error_peer = refused.peer;
      flushed.first_error_peer_length = refused.has_peer ? refused.peer_length : 0;
    }
  }
  entries_.clear();  // Capacity kept.
  head_ = 0;
  return flushed;
}

}  // namespace gev
