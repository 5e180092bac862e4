// -----------------------------------------------------------------------------
// File: ringbuffer/ring_buffer.h
// -----------------------------------------------------------------------------
//
// `gev::RingBuffer` is the growing circular byte buffer behind every connection's input and
// output. It is gev's ring buffer in C++: bytes are appended at the tail and consumed from the
// head, readable bytes are handed out as up to two `std::string_view`s (the second one non-empty
// only when the data wraps around the end of the storage), and socket I/O moves both segments
// with one `readv`/`writev`.
//
// Memory policy: a buffer that holds nothing owns no storage. Storage is taken on the first
// write, grows by doubling (capacities are powers of two, at least `kMinCapacity`), and is
// handed back to a small per-thread pool of blocks (or freed, for large blocks) as soon as the
// buffer becomes empty. An idle connection therefore costs only this object, while a busy one
// recycles the same block without touching the allocator. `set_limit()` bounds how many bytes
// the buffer may hold; a write beyond it is refused instead of allocating without limit.
//
// Example:
//
//   gev::RingBuffer buffer;
//   buffer.WriteString("hello, ");
//   buffer.WriteString("world");
//   gev::RingBuffer::Slices readable = buffer.PeekAll();   // no copy
//   Consume(readable.first);
//   Consume(readable.second);
//   buffer.Retrieve(readable.size());
//
// Framing code can look ahead without committing:
//
//   if (auto length = buffer.PeekUint32(); length && buffer.Length() >= 4 + *length) { ... }
//
//   buffer.VirtualRead(4);              // speculative; Length() is unchanged
//   if (!HaveWholeFrame(buffer)) buffer.VirtualRevert(); else buffer.VirtualFlush();
//
// Views returned by `Peek*()` and `VirtualRead()` stay valid until the next call that writes to,
// consumes from, or resets the buffer.
//
// Thread safety: a RingBuffer is not thread-safe; one thread uses it at a time (a connection's
// buffers are used on the connection's loop thread). The block pool is per thread, so buffers
// on different threads never contend.

#ifndef GEV_RINGBUFFER_RING_BUFFER_H_
#define GEV_RINGBUFFER_RING_BUFFER_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "ringbuffer/internal/block_pool.h"

namespace gev {

class RingBuffer {
 public:
  // Smallest storage a buffer takes; every capacity is a power of two at least this large.
  static constexpr size_t kMinCapacity = size_t{1} << ringbuffer_internal::kSmallestBlockLog2;
  // The largest limit (and so the most bytes one buffer holds): 2 GiB.
  static constexpr uint32_t kMaxLimit = uint32_t{1} << 31;
  // Size of the stack buffer `ReadFromFd(fd)` reads into beyond the free space (as muduo's).
  static constexpr size_t kReadScratchSize = 64 * 1024;
  // Free space from which `ReadFromFd` reads into the storage only, without the scratch buffer.
  static constexpr size_t kDirectReadBytes = 16 * 1024;

  // Up to two contiguous views of readable bytes, in order. `second` is empty unless the bytes
  // wrap around the end of the storage.
  struct Slices {
    std::string_view first;
    std::string_view second;

    size_t size() const { return first.size() + second.size(); }
    bool empty() const { return size() == 0; }
    // Copies the bytes, in order, to `dst`, which must have room for size() bytes.
    void CopyTo(char* dst) const;
    std::string ToString() const;
    // Slices::WriteToFd() — one `writev` of both views; returns the bytes written or -1 with
    // errno set (EAGAIN is not retried, EINTR is). Consumes nothing.
    ssize_t WriteToFd(int fd) const;
  };

  RingBuffer() = default;
  ~RingBuffer();

  RingBuffer(RingBuffer&& other) noexcept;
  RingBuffer& operator=(RingBuffer&& other) noexcept;
  RingBuffer(const RingBuffer&) = delete;
  RingBuffer& operator=(const RingBuffer&) = delete;

  // ---- Sizes ----------------------------------------------------------------------------------

  // RingBuffer::Length() — readable bytes (from the read position, ignoring VirtualRead).
  size_t Length() const { return size_; }
  // RingBuffer::Capacity() — bytes of storage owned now; 0 while the buffer is empty.
  size_t Capacity() const { return capacity(); }
  bool IsEmpty() const { return size_ == 0; }
  // RingBuffer::IsFull() — true when the storage is full, so the next write must grow it.
  bool IsFull() const { return block_ != 0 && size_ == capacity(); }
  // RingBuffer::set_limit() — the most bytes the buffer will hold. Writes that would exceed it
  // are refused and `ReadFromFd` reads no more than fits. Defaults to kMaxLimit.
  // At most kMaxLimit (2 GiB): positions are kept in 32 bits, since every connection has two
  // buffers and an idle connection's bytes count.
  void set_limit(size_t max_bytes) {
    limit_ = static_cast<uint32_t>(max_bytes < kMaxLimit ? max_bytes : kMaxLimit);
  }
  size_t limit() const { return limit_; }

  // ---- Write side ----------------------------------------------------------------------------

  // RingBuffer::Write() — appends `n` bytes, growing the storage as needed. Returns false, and
  // writes nothing, when the bytes would take the buffer past `limit()`.
  bool Write(const void* data, size_t n) {
    // Fast path: fits the storage we own (capacity() is 0 if none) and the limit.
    if (n <= capacity() - size_ && size_ + n <= limit_) {
      if (n != 0) Append(static_cast<const char*>(data), n);
      return true;
    }
    // Second fastest: an empty buffer takes this thread's spare block of the size it needs.
    if (block_ == 0 && n - 1 < ringbuffer_internal::kLargestPooledBlock && n <= limit_) {
      int size_class = ringbuffer_internal::SizeClassFor(n);
      if (char* block = ringbuffer_internal::TakeSpareBlock(size_class)) {
        SetStorage(block, kMinCapacity << size_class);
        CopyBytes(block, static_cast<const char*>(data), n);
        size_ = static_cast<uint32_t>(n);  // n <= kLargestPooledBlock.
        return true;
      }
    }
    return WriteGrowing(data, n);
  }
  bool WriteString(std::string_view s) { return Write(s.data(), s.size()); }
  bool WriteByte(char c) { return Write(&c, 1); }

  // ---- Zero-copy reads -----------------------------------------------------------------------

  // RingBuffer::Peek() — views of the first min(n, Length()) readable bytes; consumes nothing.
  Slices Peek(size_t n) const { return SlicesAt(read_index_, n < size_ ? n : size_); }
  Slices PeekAll() const { return SlicesAt(read_index_, size_); }

  // Big-endian integers at the read position, or nullopt when fewer bytes are readable.
  std::optional<uint8_t> PeekUint8() const;
  std::optional<uint16_t> PeekUint16() const;
  std::optional<uint32_t> PeekUint32() const;
  std::optional<uint64_t> PeekUint64() const;

  // ---- Looking inside, across the wrap (for parsers) --------------------------------------
  //
  // Offsets count from the read position. A request parser finds its delimiters and takes a
  // contiguous view without caring where the storage wraps:
  //
  //   size_t eol = buffer.Find("\r\n");
  //   if (eol == gev::RingBuffer::npos) return {};       // incomplete: wait for more
  //   char scratch[256];
  //   std::string_view line = buffer.Contiguous(eol, scratch, sizeof(scratch));
  //   ...
  //   buffer.Retrieve(eol + 2);                           // skip the line and its CRLF

  static constexpr size_t npos = static_cast<size_t>(-1);
  // RingBuffer::At() — the byte at `offset` (< Length()).
  char At(size_t offset) const { return storage()[(read_index_ + offset) & Mask()]; }
  // RingBuffer::Find() — the offset of the first `c` at or after `from`, or npos.
  size_t Find(char c, size_t from = 0) const;
  // RingBuffer::Find() — the offset of the first occurrence of `needle` (non-empty) starting
  // at or after `from`, matched across the wrap; npos when there is none.
  size_t Find(std::string_view needle, size_t from = 0) const;
  // RingBuffer::Contiguous() — the first min(n, Length()) bytes as one view: into the storage
  // when they do not wrap, else copied to `scratch` (`scratch_size` >= that many bytes; fewer
  // returns only what fits, so compare the size). Valid as Peek's views are, and as long as
  // `scratch`.
  std::string_view Contiguous(size_t n, char* scratch, size_t scratch_size) const;
  // As above, copying into `*scratch` (resized) only when the bytes wrap.
  std::string_view Contiguous(size_t n, std::string* scratch) const;

  // ---- Consume -------------------------------------------------------------------------------

  // RingBuffer::Retrieve() — discards the first min(n, Length()) readable bytes.
  void Retrieve(size_t n) {
    if (n < size_) {  // So n fits the 32-bit positions.
      read_index_ = static_cast<uint32_t>((read_index_ + n) & Mask());
      size_ -= static_cast<uint32_t>(n);
      virtual_consumed_ = 0;
    } else {
      Reset();
    }
  }
  void RetrieveAll() { Reset(); }
  // RingBuffer::Read() — copies up to `n` bytes to `dst` and consumes them; returns the count.
  size_t Read(void* dst, size_t n);
  // RingBuffer::ReadByte() — consumes one byte, or returns nullopt when empty.
  std::optional<char> ReadByte();
  // RingBuffer::Bytes() — a copy of all readable bytes; consumes nothing.
  std::string Bytes() const { return PeekAll().ToString(); }
  // RingBuffer::Reset() — discards everything and releases the storage.
  void Reset() {
    // The block usually becomes the thread's spare of its size, inline; the rest go out of line.
    // (capacity - 1 wraps when there is no block.)
    const uint32_t capacity = this->capacity();
    char* const storage = this->storage();
    bool kept = capacity - 1 < ringbuffer_internal::kLargestPooledBlock &&
                ringbuffer_internal::KeepSpareBlock(ringbuffer_internal::SizeClass(capacity),
                                                    storage);
    if (!kept && storage != nullptr) ringbuffer_internal::ReleaseBlock(storage, capacity);
    // Together, so the compiler writes these adjacent zeros as a few wide stores.
    block_ = 0;
    read_index_ = 0;
    size_ = 0;
    virtual_consumed_ = 0;
  }

  // ---- Speculative reads (gev's Virtual* API, for framing code) ------------------------------
  //
  // A virtual read position starts at the read position. `VirtualRead` advances it without
  // consuming, `VirtualFlush` consumes everything up to it, `VirtualRevert` moves it back to the
  // read position. Every other consuming call also moves it back.

  // RingBuffer::VirtualRead() — views of the next min(n, VirtualLength()) bytes after the
  // virtual position, which advances past them.
  Slices VirtualRead(size_t n);
  // RingBuffer::VirtualLength() — readable bytes after the virtual position.
  size_t VirtualLength() const { return size_ - virtual_consumed_; }
  void VirtualFlush() { Retrieve(virtual_consumed_); }
  void VirtualRevert() { virtual_consumed_ = 0; }

  // ---- Socket I/O ----------------------------------------------------------------------------

  // RingBuffer::ReadFromFd() — one `readv` into the free space (both segments), and, when
  // that is under kDirectReadBytes, into `scratch` too; bytes that landed in `scratch` are
  // then appended, growing the storage. So one system call can take a large burst without
  // every buffer being large. A buffer that owns no storage first takes a pooled block of up
  // to kLargestPooledBlock bytes and reads straight into it, so the common case (an empty
  // buffer, a burst) copies nothing; the block goes back to the pool when the buffer empties
  // (see ShrinkToFit for leftovers). Returns the bytes read,
  // 0 at end of file, or -1 with errno set (EAGAIN included; EINTR is retried). When the buffer
  // is at its limit it reads nothing and fails with ENOBUFS.
  // `offered`, if given, is set to how many bytes the readv asked for: a read that returns all
  // of them most likely left more in the socket.
  ssize_t ReadFromFd(int fd, char* scratch, size_t scratch_size, size_t* offered = nullptr);
  // As above, with a `kReadScratchSize` buffer on the stack.
  ssize_t ReadFromFd(int fd);

  // RingBuffer::ShrinkToFit() — when the readable bytes fill at most a quarter of the storage,
  // moves them to the smallest block that holds them (a burst's big block is not kept for a
  // few leftover bytes). The virtual read position is kept.
  void ShrinkToFit();

  // RingBuffer::TakeFrom() — moves `other`'s bytes and storage here without copying; `other`
  // is left empty, owning nothing. This buffer must be empty. Limits stay as they were.
  void TakeFrom(RingBuffer& other);

  // RingBuffer::WriteToFd() — one `writev` of both readable segments; consumes what was
  // written. Returns the bytes written or -1 with errno set (EAGAIN is not retried, EINTR is).
  ssize_t WriteToFd(int fd);

 private:
  static constexpr uintptr_t kCapacityBits = ringbuffer_internal::kBlockAlignment - 1;
  char* storage() const { return reinterpret_cast<char*>(block_ & ~kCapacityBits); }
  // 0 or a power of two >= kMinCapacity, <= kMaxLimit. (1 << 0) >> 1 is 0: no block.
  uint32_t capacity() const {
    return static_cast<uint32_t>((uint64_t{1} << (block_ & kCapacityBits)) >> 1);
  }
  // `block` (from ringbuffer_internal, so aligned) of `capacity` bytes, a power of two.
  void SetStorage(char* block, size_t capacity) {
    block_ = reinterpret_cast<uintptr_t>(block) |
             static_cast<uintptr_t>(__builtin_ctzll(capacity) + 1);
  }
  size_t Mask() const { return capacity() - 1; }
  size_t WriteIndex() const { return (read_index_ + size_) & Mask(); }
  Slices SlicesAt(size_t start, size_t n) const {
    if (n == 0) return {};
    char* const storage = this->storage();
    size_t until_end = capacity() - start;
    if (n <= until_end) return {std::string_view(storage + start, n), {}};
    return {std::string_view(storage + start, until_end),
            std::string_view(storage, n - until_end)};
  }
  // memcpy, with copies of up to 16 bytes done inline: for a message that short, the call into
  // the C library costs more than the moves.
  static void CopyBytes(char* dst, const char* src, size_t n) {
    if (n - 8 <= 8) {  // 8 to 16 bytes: two 8-byte moves, overlapping below 16.
      uint64_t head, tail;
      std::memcpy(&head, src, 8);
      std::memcpy(&tail, src + n - 8, 8);
      std::memcpy(dst, &head, 8);
      std::memcpy(dst + n - 8, &tail, 8);
    } else if (n > 16) {
      std::memcpy(dst, src, n);
    } else if (n >= 4) {
      uint32_t head, tail;
      std::memcpy(&head, src, 4);
      std::memcpy(&tail, src + n - 4, 4);
      std::memcpy(dst, &head, 4);
      std::memcpy(dst + n - 4, &tail, 4);
    } else if (n != 0) {  // 1 to 3 bytes: first, middle and last (some the same byte).
      char first = src[0], middle = src[n / 2], last = src[n - 1];
      dst[0] = first;
      dst[n / 2] = middle;
      dst[n - 1] = last;
    }
  }
  // Copies `n` bytes at the write position; the room must exist.
  void Append(const char* data, size_t n) {
    size_t write_index = WriteIndex();
    char* const storage = this->storage();
    size_t until_end = capacity() - write_index;
    if (n <= until_end) {
      CopyBytes(storage + write_index, data, n);
    } else {
      std::memcpy(storage + write_index, data, until_end);
      std::memcpy(storage, data + until_end, n - until_end);
    }
    size_ += static_cast<uint32_t>(n);  // The caller made room: size_ + n <= capacity().
  }
  // Write()'s slow path: grows the storage (or takes it) first.
  bool WriteGrowing(const void* data, size_t n);
  // Makes room for `n` more bytes; false when that would pass `limit_`.
  bool Reserve(size_t n);
  template <typename T>
  std::optional<T> PeekBigEndian() const;

  // The storage block's address with log2(capacity) + 1 in its low bits (blocks are aligned to
  // ringbuffer_internal::kBlockAlignment), or 0 with no block: together in 8 bytes, so that a
  // buffer is 24 bytes (every connection has two, and an idle connection's bytes count).
  // Read through storage() and capacity(), written through SetStorage().
  uintptr_t block_ = 0;
  uint32_t read_index_ = 0;        // Index of the first readable byte.
  uint32_t size_ = 0;              // Readable bytes.
  uint32_t virtual_consumed_ = 0;  // Bytes between the read and the virtual read positions.
  uint32_t limit_ = kMaxLimit;
};

}  // namespace gev

#endif  // GEV_RINGBUFFER_RING_BUFFER_H_
