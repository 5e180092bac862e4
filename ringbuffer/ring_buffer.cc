#include "ringbuffer/ring_buffer.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <utility>

namespace gev {
namespace ringbuffer_internal {
namespace {

static_assert((RingBuffer::kMinCapacity << (kSizeClasses - 1)) == kLargestPooledBlock);
// Each size class keeps at most this many bytes (and at least 4 blocks), so a thread's pool is
// bounded by about 1.75 MiB however many connections it serves.
constexpr size_t kPooledBytesPerClass = 256 * 1024;
constexpr int kMaxSmallestBlocks = kPooledBytesPerClass / RingBuffer::kMinCapacity;
constexpr int kMaxBlocksPerLargerClass = kPooledBytesPerClass / (2 * RingBuffer::kMinCapacity);

constexpr std::align_val_t kBlockAlign{kBlockAlignment};

void FreeBlock(char* block) { ::operator delete(block, kBlockAlign); }

// The pooled blocks besides the spares in spare_blocks, which count towards their class's limit.
// Trivially destructible, so every access is a plain thread-local load with no guard.
struct BlockPool {
  char* smallest[kMaxSmallestBlocks - 1];
  char* larger[kSizeClasses - 1][kMaxBlocksPerLargerClass - 1];
  int counts[kSizeClasses];
  bool reaped;  // The thread is exiting and has freed its blocks: keep no more.
};

thread_local BlockPool pool = {};

char** ClassBlocks(int size_class) {
  return size_class == 0 ? pool.smallest : pool.larger[size_class - 1];
}

// How many blocks of a size class the array keeps: kPooledBytesPerClass worth (at least 4),
// less the class's spare.
int ClassCapacity(int size_class) {
  int limit = static_cast<int>(kPooledBytesPerClass / (RingBuffer::kMinCapacity << size_class));
  return (limit < 4 ? 4 : limit) - 1;
}

// Frees the pooled blocks when the thread exits. Set up before the first block is kept, so
// taking and handing back blocks never pays for a thread-local guard.
struct BlockPoolReaper {
  ~BlockPoolReaper() {
    for (int c = 0; c < kSizeClasses; ++c) {
      if (char* block = TakeSpareBlock(c)) FreeBlock(block);
      spare_blocks[c] = kSpareSlotClosed;
      for (int i = 0; i < pool.counts[c]; ++i) FreeBlock(ClassBlocks(c)[i]);
      pool.counts[c] = 0;
    }
    // Buffers in thread_local objects destroyed after this one free their blocks directly.
    pool.reaped = true;
  }
};

// Opens this thread's pool to keep blocks; false once the thread's reaper has run.
bool OpenPool() {
  if (pool.reaped) return false;
  static thread_local BlockPoolReaper reaper;
  (void)reaper;
  for (uintptr_t& slot : spare_blocks) slot = kSpareSlotEmpty;
  return true;
}

}  // namespace

char* AcquireBlock(size_t capacity) {
  if (capacity <= kLargestPooledBlock) {
    int c = SizeClass(capacity);
    if (char* block = TakeSpareBlock(c)) return block;
    if (pool.counts[c] > 0) return ClassBlocks(c)[--pool.counts[c]];
  }
  return static_cast<char*>(::operator new(capacity, kBlockAlign));
}

void ReleaseBlock(char* block, size_t capacity) {
  if (capacity <= kLargestPooledBlock &&
      (spare_blocks[0] != kSpareSlotClosed || OpenPool())) {
    int c = SizeClass(capacity);
    if (KeepSpareBlock(c, block)) return;
    if (pool.counts[c] < ClassCapacity(c)) {
      ClassBlocks(c)[pool.counts[c]++] = block;
      return;
    }
  }
  FreeBlock(block);
}

size_t PooledBlockCount() {
  size_t total = 0;
  for (int c = 0; c < kSizeClasses; ++c) {
    total += static_cast<size_t>(pool.counts[c]) + (spare_blocks[c] > kSpareSlotEmpty ? 1 : 0);
  }
  return total;
}

}  // namespace ringbuffer_internal

namespace {

// The smallest capacity (a power of two, at least kMinCapacity) that holds `n` bytes; n is at
// most kMaxLimit, so the shift cannot overflow.
size_t RoundUpToPowerOfTwo(size_t n) {
  return RingBuffer::kMinCapacity << ringbuffer_internal::SizeClassFor(n);
}

}  // namespace

void RingBuffer::Slices::CopyTo(char* dst) const {
  if (!first.empty()) std::memcpy(dst, first.data(), first.size());
  if (!second.empty()) std::memcpy(dst + first.size(), second.data(), second.size());
}

std::string RingBuffer::Slices::ToString() const {
  std::string out(size(), '\0');
  CopyTo(out.data());
  return out;
}

RingBuffer::~RingBuffer() {
  if (block_ != 0) ringbuffer_internal::ReleaseBlock(storage(), capacity());
}

RingBuffer::RingBuffer(RingBuffer&& other) noexcept
    : block_(std::exchange(other.block_, 0)),
      read_index_(std::exchange(other.read_index_, 0)),
      size_(std::exchange(other.size_, 0)),
      virtual_consumed_(std::exchange(other.virtual_consumed_, 0)),
      limit_(other.limit_) {}

RingBuffer& RingBuffer::operator=(RingBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    block_ = std::exchange(other.block_, 0);
    read_index_ = std::exchange(other.read_index_, 0);
    size_ = std::exchange(other.size_, 0);
    virtual_consumed_ = std::exchange(other.virtual_consumed_, 0);
    limit_ = other.limit_;
  }
  return *this;
}

bool RingBuffer::Reserve(size_t n) {
  size_t needed = size_ + n;
  if (needed < size_ || needed > limit_) return false;  // Overflow or over the limit.
  if (needed <= capacity()) return true;
  size_t new_capacity = RoundUpToPowerOfTwo(needed);
  char* block = ringbuffer_internal::AcquireBlock(new_capacity);
  if (block_ != 0) {
    // Linearize: the readable bytes move to the start of the new block.
    SlicesAt(read_index_, size_).CopyTo(block);
    ringbuffer_internal::ReleaseBlock(storage(), capacity());
  }
  SetStorage(block, new_capacity);
  read_index_ = 0;
  return true;
}

bool RingBuffer::WriteGrowing(const void* data, size_t n) {
  if (!Reserve(n)) return false;
  Append(static_cast<const char*>(data), n);
  return true;
}

size_t RingBuffer::Find(char c, size_t from) const {
  if (from >= size_) return npos;
  Slices slices = SlicesAt((read_index_ + from) & Mask(), size_ - from);
  if (const void* hit = std::memchr(slices.first.data(), c, slices.first.size())) {
    return from + static_cast<size_t>(static_cast<const char*>(hit) - slices.first.data());
  }
  if (slices.second.empty()) return npos;  // memchr may not be given its null data().
  if (const void* hit = std::memchr(slices.second.data(), c, slices.second.size())) {
    return from + slices.first.size() +
           static_cast<size_t>(static_cast<const char*>(hit) - slices.second.data());
  }
  return npos;
}

size_t RingBuffer::Find(std::string_view needle, size_t from) const {
  if (needle.empty() || needle.size() > size_ || from > size_ - needle.size()) return npos;
  const size_t last_start = size_ - needle.size();
  // Candidates by their first byte (memchr), each checked byte by byte across the wrap.
  for (size_t at = Find(needle[0], from); at != npos && at <= last_start;
       at = Find(needle[0], at + 1)) {
    size_t i = 1;
    while (i < needle.size() && At(at + i) == needle[i]) ++i;
    if (i == needle.size()) return at;
  }
  return npos;
}

std::string_view RingBuffer::Contiguous(size_t n, char* scratch, size_t scratch_size) const {
  Slices slices = Peek(n);
  if (slices.second.empty()) return slices.first;
  size_t length = std::min(slices.size(), scratch_size);
  size_t from_first = std::min(length, slices.first.size());
  std::memcpy(scratch, slices.first.data(), from_first);
  std::memcpy(scratch + from_first, slices.second.data(), length - from_first);
  return std::string_view(scratch, length);
}

std::string_view RingBuffer::Contiguous(size_t n, std::string* scratch) const {
  Slices slices = Peek(n);
  if (slices.second.empty()) return slices.first;
  scratch->resize(slices.size());
  slices.CopyTo(scratch->data());
  return *scratch;
}

size_t RingBuffer::Read(void* dst, size_t n) {
  Slices slices = Peek(n);
  slices.CopyTo(static_cast<char*>(dst));
  Retrieve(slices.size());
  return slices.size();
}

std::optional<char> RingBuffer::ReadByte() {
  if (size_ == 0) return std::nullopt;
  char c = storage()[read_index_];
  Retrieve(1);
  return c;
}

template <typename T>
std::optional<T> RingBuffer::PeekBigEndian() const {
  if (size_ < sizeof(T)) return std::nullopt;
  unsigned char bytes[sizeof(T)];
  Peek(sizeof(T)).CopyTo(reinterpret_cast<char*>(bytes));
  T value = 0;
  for (unsigned char byte : bytes) value = static_cast<T>((value << 8) | byte);
  return value;
}

std::optional<uint8_t> RingBuffer::PeekUint8() const { return PeekBigEndian<uint8_t>(); }
std::optional<uint16_t> RingBuffer::PeekUint16() const { return PeekBigEndian<uint16_t>(); }
std::optional<uint32_t> RingBuffer::PeekUint32() const { return PeekBigEndian<uint32_t>(); }
std::optional<uint64_t> RingBuffer::PeekUint64() const { return PeekBigEndian<uint64_t>(); }

RingBuffer::Slices RingBuffer::VirtualRead(size_t n) {
  size_t available = VirtualLength();
  if (n > available) n = available;
  Slices slices = SlicesAt((read_index_ + virtual_consumed_) & Mask(), n);
  virtual_consumed_ += n;
  return slices;
}

ssize_t RingBuffer::ReadFromFd(int fd) {
  char scratch[kReadScratchSize];
  return ReadFromFd(fd, scratch, sizeof(scratch));
}

ssize_t RingBuffer::ReadFromFd(int fd, char* scratch, size_t scratch_size, size_t* offered) {
  // Never read more than the buffer may keep.
  size_t room = size_ < limit_ ? limit_ - size_ : 0;
  if (room == 0) {
    if (offered != nullptr) *offered = 0;
    errno = ENOBUFS;
    return -1;
  }
  const bool took_block = block_ == 0 && room >= kMinCapacity;
  if (took_block) {
    size_t capacity = ringbuffer_internal::kLargestPooledBlock;
    while (capacity > room) capacity >>= 1;
    SetStorage(ringbuffer_internal::AcquireBlock(capacity), capacity);
    read_index_ = 0;
  }
  iovec iov[3];
  int iov_count = 0;
  size_t free_bytes = capacity() - size_;
  size_t in_storage = free_bytes < room ? free_bytes : room;
  if (in_storage > 0) {
    char* const storage = this->storage();
    size_t write_index = WriteIndex();
    size_t until_end = capacity() - write_index;
    size_t first = in_storage < until_end ? in_storage : until_end;
    iov[iov_count++] = {storage + write_index, first};
    if (in_storage > first) iov[iov_count++] = {storage, in_storage - first};
  }
  // The scratch buffer serves reads the free space would keep small (a nearly full buffer). A
  // read with kDirectReadBytes of room in the storage goes there alone: what lands in scratch
  // is copied in afterwards, into a block grown past the pooled sizes, which costs more than
  // a second read (ReadFromFd's `offered` tells a caller that the first one filled up).
  size_t in_scratch = in_storage >= kDirectReadBytes ? 0 : room - in_storage;
  if (in_scratch > scratch_size) in_scratch = scratch_size;
  if (in_scratch > 0) iov[iov_count++] = {scratch, in_scratch};
  if (offered != nullptr) *offered = in_storage + in_scratch;

  ssize_t n;
  do {
    n = ::readv(fd, iov, iov_count);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    if (took_block) {
      int saved = errno;
      Reset();  // Empty again: own nothing.
      errno = saved;
    }
    return n;
  }

  size_t received = static_cast<size_t>(n);
  if (received <= in_storage) {
    size_ += received;
  } else {
    size_ += in_storage;
    // The limit was honoured in the iovecs, so this growth cannot be refused.
    WriteGrowing(scratch, received - in_storage);
  }
  return n;
}

void RingBuffer::ShrinkToFit() {
  if (size_ == 0 || capacity() <= kMinCapacity || size_ > capacity() / 4) return;
  size_t capacity = RoundUpToPowerOfTwo(size_ < kMinCapacity ? kMinCapacity : size_);
  char* block = ringbuffer_internal::AcquireBlock(capacity);
  SlicesAt(read_index_, size_).CopyTo(block);
  ringbuffer_internal::ReleaseBlock(storage(), this->capacity());
  SetStorage(block, capacity);
  read_index_ = 0;
}

void RingBuffer::TakeFrom(RingBuffer& other) {
  uint32_t own_limit = limit_;
  *this = std::move(other);  // Takes everything, the limit included...
  limit_ = own_limit;        // ...but the limit is this buffer's own.
}

ssize_t RingBuffer::Slices::WriteToFd(int fd) const {
  if (empty()) return 0;
  ssize_t n;
  if (second.empty()) {
    // One slice, the common case (a reply, a relayed read): write(2) spares the kernel the
    // iovec copy and checks that writev(2) makes.
    do {
      n = ::write(fd, first.data(), first.size());
    } while (n < 0 && errno == EINTR);
    return n;
  }
  iovec iov[2] = {{const_cast<char*>(first.data()), first.size()},
                  {const_cast<char*>(second.data()), second.size()}};
  do {
    n = ::writev(fd, iov, 2);
  } while (n < 0 && errno == EINTR);
  return n;
}

ssize_t RingBuffer::WriteToFd(int fd) {
  ssize_t n = PeekAll().WriteToFd(fd);
  if (n > 0) Retrieve(static_cast<size_t>(n));
  return n;
}

}  // namespace gev
