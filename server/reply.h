// -----------------------------------------------------------------------------
// File: server/reply.h
// -----------------------------------------------------------------------------
//
// `gev::Reply` is what `Handler::OnMessage` returns: the bytes the server sends back, as gev's
// OnMessage returns `[]byte`. One of: nothing (`return {};`), bytes it owns (`return
// some_string;`, moved), a string literal (`return "OK\r\n";`), a view of storage that outlives
// the call (`Reply::View(v)`), or the first n bytes of the buffer OnMessage was given
// (`Reply::FromBuffer(n)`, consumed and written without a copy: an echo allocates nothing).
//
// Thread safety: a value type, made and read on one loop thread.

#ifndef GEV_SERVER_REPLY_H_
#define GEV_SERVER_REPLY_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace gev {

class Reply {
 public:
  enum class Kind : uint8_t { kNothing, kView, kOwned, kFromBuffer };

  // Nothing to send.
  Reply() = default;
  // Bytes the reply owns (moved in; no copy of the string's storage).
  Reply(std::string bytes)  // NOLINT: implicit, so `return some_string;` reads naturally.
      : kind_(Kind::kOwned), owned_(std::move(bytes)) {}
  // A string literal or other storage that outlives the call.
  Reply(const char* literal)  // NOLINT: implicit, for `return "OK";`.
      : kind_(Kind::kView), view_(literal) {}

  // Reply::View() — bytes that stay valid after OnMessage has returned: a literal or static, a
  // member of the handler, the connection's context. Not a local of OnMessage, which is gone
  // by the time the reply is written. The server writes them, and copies what the socket does
  // not take, as soon as OnMessage returns and before it calls the handler again, so the
  // storage may be rewritten by the next call.
  static Reply View(std::string_view bytes) {
    Reply reply;
    reply.kind_ = Kind::kView;
    reply.view_ = bytes;
    return reply;
  }
  // Reply::FromBuffer() — the first `n` bytes of the buffer OnMessage was given (all it holds
  // if fewer); the server consumes them as it sends them.
  static Reply FromBuffer(size_t n) {
    Reply reply;
    reply.kind_ = Kind::kFromBuffer;
    reply.from_buffer_ = n;
    return reply;
  }

  Kind kind() const { return kind_; }
  // The bytes of a kView or kOwned reply.
  std::string_view bytes() const { return kind_ == Kind::kOwned ? owned_ : view_; }
  size_t from_buffer() const { return from_buffer_; }
  // The bytes of a kOwned reply, moved out (the reply then holds none).
  std::string TakeOwned() { return std::move(owned_); }

 private:
  Kind kind_ = Kind::kNothing;
  std::string_view view_;
  std::string owned_;
  size_t from_buffer_ = 0;
};

}  // namespace gev

#endif  // GEV_SERVER_REPLY_H_
