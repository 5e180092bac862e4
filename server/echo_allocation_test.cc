// The steady-state echo path allocates nothing: a replaced global operator new counts every
// allocation in the process while a client echoes 10,000 messages after a warm-up.

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "gtest/gtest.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"

namespace {
std::atomic<uint64_t> allocations{0};
}  // namespace

void* operator new(size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t size) { return operator new(size); }
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](size_t size, const std::nothrow_t& tag) noexcept {
  return operator new(size, tag);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace gev {
namespace {

class Echo : public Handler {
 public:
  Reply OnMessage(Connection&, RingBuffer& buffer) override {
    return Reply::FromBuffer(buffer.Length());
  }
};

// Echoes `count` messages of `size` bytes (framed by `header` bytes of length when non-zero)
// with stack buffers only; false on any mismatch.
bool EchoRounds(int fd, int count, size_t size, bool length_field) {
  char message[512];
  char reply[512];
  size_t total = size + (length_field ? 4 : 0);
  for (int round = 0; round < count; ++round) {
    char* payload = message;
    if (length_field) {
      message[0] = message[1] = 0;
      message[2] = static_cast<char>(size >> 8);
      message[3] = static_cast<char>(size);
      payload = message + 4;
    }
    for (size_t i = 0; i < size; ++i) payload[i] = static_cast<char>(round + i);
    if (::write(fd, message, total) != static_cast<ssize_t>(total)) return false;
    size_t got = 0;
    while (got < total) {
      ssize_t n = ::read(fd, reply + got, total - got);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    for (size_t i = 0; i < total; ++i) {
      if (reply[i] != message[i]) return false;
    }
  }
  return true;
}

class EchoAllocationTest : public ::testing::TestWithParam<bool> {};

TEST_P(EchoAllocationTest, TenThousandEchoesAfterWarmUpAllocateNothing) {
  const bool length_field = GetParam();
  Echo handler;
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.num_loops = 1;
  if (length_field) options.protocol = std::make_shared<LengthFieldProtocol>();
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok()) << server.status();
  testing::ServerThread running(server->get());
  int fd = testing::Connect((*server)->ListenAddress());
  ASSERT_GE(fd, 0);
  for (size_t size : {16, 500}) {
    ASSERT_TRUE(EchoRounds(fd, 1000, size, length_field));  // Warm-up: pools fill.
    uint64_t before = allocations.load();
    bool echoed = EchoRounds(fd, 10000, size, length_field);
    uint64_t during = allocations.load() - before;
    EXPECT_TRUE(echoed);
    EXPECT_EQ(during, 0u) << size << "-byte messages";
  }
  ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(PassThroughAndLengthField, EchoAllocationTest, ::testing::Bool());

}  // namespace
}  // namespace gev
