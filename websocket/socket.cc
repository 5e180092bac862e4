#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "websocket/internal/session.h"
#include "websocket/websocket.h"

namespace gev::websocket {
namespace {

// A client's masking keys (RFC 6455, 5.3: unpredictable, from a strong source of entropy):
// OpenSSL's generator, drawn 256 bytes at a time per thread.
uint32_t NextMaskKey() {
  thread_local unsigned char pool[256];
  thread_local size_t used = sizeof(pool);
  if (used == sizeof(pool)) {
    if (RAND_bytes(pool, sizeof(pool)) != 1) {
      // OpenSSL's generator cannot fail once seeded; if it ever did, a key from the clock and
      // the pool's address is still not a constant the peer could predict in advance.
      uint64_t fallback = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
                          reinterpret_cast<uintptr_t>(&pool);
      std::memcpy(pool, &fallback, sizeof(fallback));
      std::memset(pool + sizeof(fallback), 0, sizeof(pool) - sizeof(fallback));
    }
    used = 0;
  }
  uint32_t key;
  std::memcpy(&key, pool + used, sizeof(key));
  used += sizeof(key);
  return key;
}

}  // namespace

Socket::Socket(PassKey, Service* service, const Options* options, Role role,
               ConnectionPtr connection)
    : service_(service), options_(options), role_(role), connection_(std::move(connection)) {}

absl::Status Socket::SendFrame(Opcode opcode, std::string_view payload,
                               Compression compression) {
  if (close_sent_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the WebSocket is closing");
  }
  const DeflateOptions& deflate = options_->deflate;
  std::string body;  // A compressed or masked copy, when the payload cannot go as it is.
  bool rsv1 = false;
  if (deflate_.has_value() && compression == Compression::kAuto && !IsControl(opcode) &&
      payload.size() >= deflate.min_size) {
    const bool ours_without_context = role_ == Role::kServer
                                          ? deflate_->server_no_context_takeover
                                          : deflate_->client_no_context_takeover;
    const int window = role_ == Role::kServer ? deflate_->server_max_window_bits
                                              : deflate_->client_max_window_bits;
    Deflater* deflater = nullptr;
    if (ours_without_context) {
      deflater = &internal::SharedDeflater(window, deflate.level);
    } else if (connection_->loop()->IsInLoopThread()) {
      deflater = own_deflater_.get();
    }
    if (deflater != nullptr && deflater->Compress(payload, &body)) {
      rsv1 = true;
      payload = body;
    }
  }
  std::optional<uint32_t> mask_key;
  if (role_ == Role::kClient) {
    mask_key = NextMaskKey();
    if (payload.data() != body.data()) body.assign(payload.data(), payload.size());
    ApplyMask(body.data(), body.size(), *mask_key, 0);
    payload = body;
  }
  char header[kMaxFrameHeader];
  size_t n = WriteFrameHeader(header, opcode, /*fin=*/true, rsv1, payload.size(), mask_key);
  absl::Status sent;
  if (connection_->loop()->IsInLoopThread()) {
    // A close frame is queued (SendCloseFrame), so an inline send precedes it.
    sent = connection_->SendAll({std::string_view(header, n), payload});
  } else {
    std::lock_guard<OrderLock> lock(order_lock_);
    if (close_sent_.load(std::memory_order_acquire)) {
      return absl::FailedPreconditionError("the WebSocket is closing");
    }
    sent = connection_->SendAll({std::string_view(header, n), payload});  // Queued in order.
  }
  const size_t max_backlog = options_->max_backlog;
  if (sent.ok() && max_backlog != 0 && connection_->PendingOutput() > max_backlog) {
    // A close frame behind the backlog would not arrive either: the connection ends now.
    connection_->ForceClose(absl::ResourceExhaustedError(
        absl::StrCat("pending output passed max_backlog (", max_backlog, " bytes)")));
  }
  return sent;
}

absl::Status Socket::Send(std::string_view message, MessageType type, Compression compression) {
  return SendFrame(type == MessageType::kText ? Opcode::kText : Opcode::kBinary, message,
                   compression);
}

absl::Status Socket::Ping(std::string_view payload) {
  if (payload.size() > kMaxControlPayload) {
    return absl::InvalidArgumentError("a ping carries at most 125 bytes");
  }
  return SendFrame(Opcode::kPing, payload);
}

absl::Status Socket::SendCloseFrame(std::string_view payload, std::function<void()> then) {
  std::string frame(kMaxFrameHeader, '\0');
  std::optional<uint32_t> mask_key;
  if (role_ == Role::kClient) mask_key = NextMaskKey();
  frame.resize(WriteFrameHeader(frame.data(), Opcode::kClose, true, false, payload.size(),
                                mask_key));
  size_t header = frame.size();
  frame.append(payload.data(), payload.size());
  if (mask_key.has_value()) ApplyMask(frame.data() + header, payload.size(), *mask_key, 0);
  std::lock_guard<OrderLock> lock(order_lock_);
  if (close_sent_.exchange(true, std::memory_order_acq_rel)) {
    return absl::FailedPreconditionError("a close frame was sent already");
  }
  std::shared_ptr<Socket> self = shared_from_this();
  bool queued = connection_->loop()->QueueInLoop(
      [self, frame = std::move(frame), then = std::move(then)] {
        absl::Status sent = self->connection_->SendAll({frame});
        if (absl::IsResourceExhausted(sent)) {
          // The peer reads nothing: the connection ends now.
          self->connection_->ForceClose(absl::Status(
              sent.code(), absl::StrCat("close frame refused: ", sent.message())));
        }
        // Otherwise refused only by a connection that is ending already.
        if (then) then();
      });
  if (!queued) return absl::FailedPreconditionError("the connection's loop has stopped");
  return absl::OkStatus();
}

absl::Status Socket::Close(uint16_t code, std::string_view reason) {
  if (!IsValidCloseCode(code)) {
    return absl::InvalidArgumentError(absl::StrCat("close code ", code, " is not one to send"));
  }
  // The close deadline starts once the frame is out (on the socket's loop).
  Socket* self = this;
  return SendCloseFrame(ClosePayloadFor(code, reason), [self] { internal::CloseSent(*self); });
}

void Socket::Subscribe(std::string topic) {
  // A client's socket has no topics; a closed one has none left (and its service may be gone).
  if (service_ == nullptr || close_sent_.load(std::memory_order_acquire)) return;
  std::shared_ptr<Socket> self = shared_from_this();
  // Refused only by a finished loop, whose sockets are closed already.
  (void)connection_->loop()->RunInLoop([self, topic = std::move(topic)]() mutable {
    self->service_->SubscribeInLoop(*self, std::move(topic), true);
  });
}

void Socket::Unsubscribe(std::string topic) {
  if (service_ == nullptr || close_sent_.load(std::memory_order_acquire)) return;
  std::shared_ptr<Socket> self = shared_from_this();
  // As in Subscribe.
  (void)connection_->loop()->RunInLoop([self, topic = std::move(topic)]() mutable {
    self->service_->SubscribeInLoop(*self, std::move(topic), false);
  });
}

bool Socket::IsSubscribed(std::string_view topic) const {
  return std::find(topics_.begin(), topics_.end(), topic) != topics_.end();
}

void Socket::Publish(std::string_view topic, std::string_view message, MessageType type,
                     Compression compression) {
  if (service_ == nullptr || close_sent_.load(std::memory_order_acquire)) return;
  service_->Publish(topic, message, type, this, compression);
}

HttpResponse Handler::OnHttpRequest(const http::Request& request) {
  HttpResponse response;
  if (request.target == "/") {
    response.status_line = "426 Upgrade Required";
    response.headers = {{"Upgrade", "websocket"}, {"Sec-WebSocket-Version", "13"}};
    response.body = "a WebSocket endpoint: upgrade to talk\n";
  } else {
    response.body = "Not Found\n";
  }
  return response;
}

}  // namespace gev::websocket
