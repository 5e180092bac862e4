#include "net/datagram_io.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace gev {
namespace {

// A blocking UDP socket on 127.0.0.1, port 0, with a receive timeout.
struct Peer {
  Peer() {
    fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    timeval timeout{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    socklen_t length = sizeof storage;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length);
    storage_length = length;
  }
  ~Peer() { ::close(fd); }
  void SendTo(const InetAddress& to, std::string_view bytes) const {
    ASSERT_EQ(::sendto(fd, bytes.data(), bytes.size(), 0, to.sockaddr(), to.length()),
              static_cast<ssize_t>(bytes.size()));
  }
  std::string Receive() const {
    std::string buffer(70000, '\0');
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    buffer.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return buffer;
  }
  int fd;
  sockaddr_storage storage{};
  socklen_t storage_length = 0;
};

InetAddress Bound(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length);
  return InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
}

TEST(DatagramIoTest, OneReadTakesABatchAndOneFlushAnswersIt) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  const InetAddress address = Bound(*fd);
  Peer peer;
  for (int i = 0; i < 40; ++i) peer.SendTo(address, "datagram " + std::to_string(i));
  DatagramReader reader(64, 2048);
  DatagramWriter writer(1 << 20);
  int n = reader.Read(*fd);
  ASSERT_EQ(n, 40);  // Loopback delivers at once: all 40 wait, and one call takes them.
  for (int i = 0; i < n; ++i) {
    const DatagramReader::Datagram& datagram = reader.at(static_cast<size_t>(i));
    EXPECT_EQ(datagram.payload, "datagram " + std::to_string(i));
    EXPECT_FALSE(datagram.truncated);
    EXPECT_EQ(Bound(peer.fd).port(), InetAddress::FromSockaddr(
                                         reinterpret_cast<const sockaddr*>(datagram.peer),
                                         datagram.peer_length).port());
    ASSERT_TRUE(writer.Queue(datagram.peer, datagram.peer_length, "re: ", datagram.payload).ok());
  }
  EXPECT_EQ(reader.Read(*fd), 0);  // Nothing more waits.
  DatagramWriter::Flushed flushed = writer.Flush(*fd);
  EXPECT_EQ(flushed.sent, 40u);
  EXPECT_FALSE(flushed.blocked);
  EXPECT_EQ(writer.send_calls(), 1u);
  EXPECT_TRUE(writer.empty());
  for (int i = 0; i < 40; ++i) EXPECT_EQ(peer.Receive(), "re: datagram " + std::to_string(i));
  ::close(*fd);
}

TEST(DatagramIoTest, ALongerDatagramArrivesCutAndSaysHowLongItWas) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  Peer peer;
  peer.SendTo(Bound(*fd), std::string(3000, 'x'));
  peer.SendTo(Bound(*fd), "short");
  DatagramReader reader(8, 1000);
  ASSERT_EQ(reader.Read(*fd), 2);
  EXPECT_TRUE(reader.at(0).truncated);
  EXPECT_EQ(reader.at(0).length, 3000u);
  EXPECT_EQ(reader.at(0).payload, std::string(1000, 'x'));
  EXPECT_FALSE(reader.at(1).truncated);
  EXPECT_EQ(reader.at(1).payload, "short");
  ::close(*fd);
}

// A datagram the kernel refuses (longer than IPv4 carries) is dropped and reported; the
// datagrams around it still go, in order.
TEST(DatagramIoTest, ARefusedDatagramIsReportedAndTheRestGo) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  Peer peer;
  DatagramWriter writer(1 << 20);
  const std::string too_long(65520, 'z');  // IPv4's most is 65,507.
  ASSERT_TRUE(writer.Queue(&peer.storage, peer.storage_length, "first").ok());
  ASSERT_TRUE(writer.Queue(&peer.storage, peer.storage_length, too_long).ok());
  ASSERT_TRUE(writer.Queue(&peer.storage, peer.storage_length, "third").ok());
  EXPECT_TRUE(absl::IsInvalidArgument(
      writer.Queue(&peer.storage, peer.storage_length, std::string(kMaxDatagram + 1, 'q'))));
  DatagramWriter::Flushed flushed = writer.Flush(*fd);
  EXPECT_EQ(flushed.sent, 2u);
  EXPECT_EQ(flushed.refused, 1u);
  EXPECT_TRUE(absl::IsInvalidArgument(flushed.first_error)) << flushed.first_error;
  EXPECT_EQ(InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&flushed.first_error_peer),
                                      flushed.first_error_peer_length).port(),
            Bound(peer.fd).port());
  EXPECT_EQ(peer.Receive(), "first");
  EXPECT_EQ(peer.Receive(), "third");
  ::close(*fd);
}

// A peer that does not read fills the path (a Unix datagram pair blocks where UDP on loopback
// would drop): the flush stops, copies what it could not send (the views may go stale),
// refuses more past max_queued_bytes, and sends the rest in order once there is room.
TEST(DatagramIoTest, ABlockedFlushKeepsCopiesAndSendsThemInOrderLater) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair), 0);
  constexpr int kCount = 500;
  std::string source(kCount * 100, '\0');
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<char>('a' + i % 26);
  const std::string original = source;
  DatagramWriter writer(/*max_queued_bytes=*/kCount * 100);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(writer.Queue(nullptr, 0, std::string_view(source).substr(i * 100, 100)).ok());
  }
  DatagramWriter::Flushed first = writer.Flush(pair[0]);
  ASSERT_TRUE(first.blocked);
  ASSERT_LT(first.sent, static_cast<size_t>(kCount));
  EXPECT_EQ(writer.kept_bytes(), (kCount - first.sent) * 100);
  std::fill(source.begin(), source.end(), '#');  // The views are stale now.
  // Past the cap: refused, not queued.
  EXPECT_TRUE(absl::IsResourceExhausted(
      writer.QueueOwned(nullptr, 0, std::string(first.sent * 100 + 1, 'o'))));
  size_t received = 0;
  char buffer[200];
  size_t sent = first.sent;
  while (received < static_cast<size_t>(kCount)) {
    ssize_t n = ::recv(pair[1], buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0) {
      DatagramWriter::Flushed more = writer.Flush(pair[0]);
      sent += more.sent;
      continue;
    }
    ASSERT_EQ(n, 100);
    ASSERT_EQ(std::string(buffer, 100), original.substr(received * 100, 100)) << received;
    ++received;
  }
  EXPECT_EQ(sent, static_cast<size_t>(kCount));
  EXPECT_TRUE(writer.empty());
  EXPECT_EQ(writer.kept_bytes(), 0u);
  ::close(pair[0]);
  ::close(pair[1]);
}

// The bytes of datagram `i` of a run: its number, then a pattern, so a lost, repeated or
// reordered one shows.
std::string RunDatagram(int i, size_t length) {
  std::string bytes(length, '\0');
  for (size_t j = 0; j < length; ++j) bytes[j] = static_cast<char>('a' + (i * 7 + j) % 26);
  std::string number = std::to_string(i) + ":";
  bytes.replace(0, std::min(number.size(), length), number.substr(0, length));
  return bytes;
}

// Queues 40 datagrams of 1,000 bytes and a last one of 500 to `peer`, then two to another
// peer and one of another size: three runs at most.
void QueueRuns(DatagramWriter& writer, std::vector<std::string>& storage, const Peer& peer,
               const Peer& other) {
  storage.clear();
  for (int i = 0; i < 41; ++i) storage.push_back(RunDatagram(i, i == 40 ? 500 : 1000));
  storage.push_back(RunDatagram(41, 1000));
  storage.push_back(RunDatagram(42, 1000));
  storage.push_back(RunDatagram(43, 1200));
  for (size_t i = 0; i < storage.size(); ++i) {
    const Peer& to = (i == 41 || i == 42) ? other : peer;
    ASSERT_TRUE(writer.Queue(&to.storage, to.storage_length, storage[i]).ok());
  }
}

void ExpectRunsArrived(const std::vector<std::string>& storage, const Peer& peer,
                       const Peer& other) {
  for (size_t i = 0; i < storage.size(); ++i) {
    const Peer& at = (i == 41 || i == 42) ? other : peer;
    EXPECT_EQ(at.Receive(), storage[i]) << i;
  }
}

TEST(DatagramIoTest, SocketBuffersAreSetToAtLeastWhatWasAskedUpToTheCap) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  int before = 0;
  socklen_t length = sizeof before;
  ASSERT_EQ(::getsockopt(*fd, SOL_SOCKET, SO_SNDBUF, &before, &length), 0);
  ASSERT_TRUE(SetSocketBuffers(*fd, 1 << 20, 0).ok());
  int receive = 0, send = 0;
  ASSERT_EQ(::getsockopt(*fd, SOL_SOCKET, SO_RCVBUF, &receive, &length), 0);
  ASSERT_EQ(::getsockopt(*fd, SOL_SOCKET, SO_SNDBUF, &send, &length), 0);
  // With CAP_NET_ADMIN (SO_RCVBUFFORCE works) a megabyte is there; otherwise as much as
  // net.core.rmem_max allows, doubled.
  int cap = 1 << 20;
  int probe = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int value = 4096;
  const bool forced = ::setsockopt(probe, SOL_SOCKET, SO_RCVBUFFORCE, &value, sizeof value) == 0;
  ::close(probe);
  if (!forced) {
    std::ifstream rmem_max("/proc/sys/net/core/rmem_max");
    int most = 0;
    rmem_max >> most;
    cap = std::min(cap, 2 * most);
  }
  EXPECT_GE(receive, cap);
  EXPECT_EQ(send, before);  // 0: left alone.
  ASSERT_TRUE(SetSocketBuffers(*fd, 0, 4096).ok());
  ASSERT_EQ(::getsockopt(*fd, SOL_SOCKET, SO_SNDBUF, &send, &length), 0);
  EXPECT_GE(send, 4096);
  EXPECT_LT(send, before);
  ::close(*fd);
}

// With GSO, a run to one peer of one size (the last shorter) goes as one message, and a peer
// without GRO still gets each datagram on its own, whole and in order.
TEST(DatagramIoTest, GsoSendsARunToOnePeerAsOneMessage) {
  for (bool gso : {false, true}) {
    SCOPED_TRACE(gso ? "gso" : "no gso");
    absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
    ASSERT_TRUE(fd.ok()) << fd.status();
    Peer peer, other;
    DatagramWriter writer(1 << 20);
    writer.set_gso(gso);
    std::vector<std::string> storage;
    QueueRuns(writer, storage, peer, other);
    DatagramWriter::Flushed flushed = writer.Flush(*fd);
    EXPECT_EQ(flushed.sent, storage.size());
    EXPECT_EQ(flushed.refused, 0u);
    EXPECT_TRUE(flushed.gso_refused.ok()) << flushed.gso_refused;
    EXPECT_EQ(writer.send_calls(), 1u);
    // The 41 of the first run in one message, the two to the other peer in another; the last
    // one alone goes plainly.
    EXPECT_EQ(writer.gso_messages(), gso ? 2u : 0u);
    ExpectRunsArrived(storage, peer, other);
    ::close(*fd);
  }
}

// A receiver with GRO gets a GSO run as one buffer, which Read splits back into datagrams.
TEST(DatagramIoTest, GroHandsOverARunThatReadSplitsAgain) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  ASSERT_TRUE(EnableGro(*fd).ok());
  absl::StatusOr<int> sender = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(sender.ok()) << sender.status();
  const InetAddress address = Bound(*fd);
  sockaddr_storage to{};
  std::memcpy(&to, address.sockaddr(), address.length());
  DatagramWriter writer(1 << 20);
  writer.set_gso(true);
  std::vector<std::string> sent;
  for (int i = 0; i < 30; ++i) sent.push_back(RunDatagram(i, i == 29 ? 77 : 1400));
  for (const std::string& bytes : sent) ASSERT_TRUE(writer.Queue(&to, address.length(), bytes).ok());
  ASSERT_EQ(writer.Flush(*sender).sent, sent.size());
  ASSERT_EQ(writer.gso_messages(), 1u);

  DatagramReader reader(4, kMaxDatagram);
  ASSERT_EQ(reader.Read(*fd), 30);  // One message, 30 datagrams: more than the batch of 4.
  EXPECT_EQ(reader.coalesced_reads(), 1u);
  for (int i = 0; i < 30; ++i) {
    const DatagramReader::Datagram& datagram = reader.at(static_cast<size_t>(i));
    EXPECT_EQ(datagram.payload, sent[static_cast<size_t>(i)]) << i;
    EXPECT_FALSE(datagram.truncated);
    EXPECT_EQ(InetAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(datagram.peer),
                                        datagram.peer_length).port(),
              Bound(*sender).port());
  }

  // A reader whose slots are too small for the run: the datagrams that fit arrive whole and
  // the rest is one truncated datagram that says how much was lost.
  for (const std::string& bytes : sent) ASSERT_TRUE(writer.Queue(&to, address.length(), bytes).ok());
  ASSERT_EQ(writer.Flush(*sender).sent, sent.size());
  DatagramReader small(4, 5000);
  ASSERT_EQ(small.Read(*fd), 4);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(small.at(static_cast<size_t>(i)).payload, sent[static_cast<size_t>(i)]);
  EXPECT_TRUE(small.at(3).truncated);
  EXPECT_EQ(small.at(3).payload.size(), 5000u - 3 * 1400);
  EXPECT_EQ(small.at(3).length, 26u * 1400 + 77);
  ::close(*fd);
  ::close(*sender);
}

// Where the kernel has no UDP_GRO (here: a socket it does not apply to), EnableGro says so and
// the socket goes on as it was.
TEST(DatagramIoTest, EnableGroSaysWhenTheKernelCannot) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair), 0);
  EXPECT_TRUE(absl::IsUnimplemented(EnableGro(pair[0])));
  ASSERT_EQ(::send(pair[1], "still works", 11, 0), 11);
  DatagramReader reader(4, 64);
  ASSERT_EQ(reader.Read(pair[0]), 1);
  EXPECT_EQ(reader.at(0).payload, "still works");
  ::close(pair[0]);
  ::close(pair[1]);
}

// An IPv4 peer of a dual-stack socket has an IPv4-mapped IPv6 address, and IPv4's limits: a
// run is cut at 65,507 bytes, not IPv6's 65,527.
TEST(DatagramIoTest, GsoRunsToAMappedIpv4PeerKeepToIpv4sLimit) {
  absl::StatusOr<InetAddress> any = InetAddress::Parse("[::]:0", NetworkType::kTcp6);
  ASSERT_TRUE(any.ok());
  absl::StatusOr<int> fd = OpenDatagramSocket(*any, false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  Peer peer;  // IPv4, on 127.0.0.1.
  sockaddr_in6 mapped{};
  mapped.sin6_family = AF_INET6;
  mapped.sin6_port = reinterpret_cast<const sockaddr_in&>(peer.storage).sin_port;
  ASSERT_EQ(::inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.sin6_addr), 1);
  sockaddr_storage to{};
  std::memcpy(&to, &mapped, sizeof mapped);
  DatagramWriter writer(1 << 20);
  writer.set_gso(true);
  std::vector<std::string> run;
  for (int i = 0; i < 63; ++i) run.push_back(RunDatagram(i, 1040));  // 65,520 bytes in all.
  for (const std::string& bytes : run) ASSERT_TRUE(writer.Queue(&to, sizeof mapped, bytes).ok());
  DatagramWriter::Flushed flushed = writer.Flush(*fd);
  EXPECT_EQ(flushed.sent, run.size());
  EXPECT_TRUE(flushed.gso_refused.ok()) << flushed.gso_refused;
  EXPECT_EQ(writer.gso_refusals(), 0u);
  EXPECT_EQ(writer.gso_messages(), 1u);  // 62 in one message, the last alone.
  for (const std::string& bytes : run) EXPECT_EQ(peer.Receive(), bytes);
  ::close(*fd);
}

// A socket that cannot send GSO (here SO_NO_CHECK, which the kernel refuses with UDP_SEGMENT):
// the run goes again as single datagrams, nothing is lost, and GSO stays off on that writer.
TEST(DatagramIoTest, ARefusedGsoMessageFallsBackToSingleDatagrams) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  int one = 1;
  ASSERT_EQ(::setsockopt(*fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one), 0);
  Peer peer, other;
  DatagramWriter writer(1 << 20);
  writer.set_gso(true);
  std::vector<std::string> storage;
  QueueRuns(writer, storage, peer, other);
  DatagramWriter::Flushed flushed = writer.Flush(*fd);
  EXPECT_FALSE(flushed.gso_refused.ok());
  EXPECT_EQ(flushed.sent, storage.size());
  EXPECT_EQ(flushed.refused, 0u);
  EXPECT_TRUE(flushed.first_error.ok()) << flushed.first_error;
  EXPECT_FALSE(writer.gso());
  EXPECT_EQ(writer.gso_refusals(), 1u);
  EXPECT_EQ(writer.gso_messages(), 0u);
  ExpectRunsArrived(storage, peer, other);
  // The next flush does not try again.
  QueueRuns(writer, storage, peer, other);
  flushed = writer.Flush(*fd);
  EXPECT_TRUE(flushed.gso_refused.ok());
  EXPECT_EQ(writer.send_calls(), 3u);
  ExpectRunsArrived(storage, peer, other);
  ::close(*fd);
}

// Segments wider than some paths carry, refused: only runs that wide and wider go singly from
// then on (SO_NO_CHECK stands in for the narrow path: the kernel refuses with EINVAL either way).
TEST(DatagramIoTest, AGsoRefusalForWideSegmentsRulesOutOnlyThoseWidths) {
  absl::StatusOr<int> fd = OpenDatagramSocket(InetAddress::Loopback(0), false);
  ASSERT_TRUE(fd.ok()) << fd.status();
  int one = 1;
  ASSERT_EQ(::setsockopt(*fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one), 0);
  Peer peer;
  DatagramWriter writer(1 << 20);
  writer.set_gso(true);
  std::vector<std::string> wide;
  for (int i = 0; i < 10; ++i) wide.push_back(RunDatagram(i, 3000));
  for (const std::string& bytes : wide) ASSERT_TRUE(writer.Queue(&peer.storage, peer.storage_length, bytes).ok());
  DatagramWriter::Flushed flushed = writer.Flush(*fd);
  EXPECT_FALSE(flushed.gso_refused.ok());
  EXPECT_EQ(flushed.sent, wide.size());
  EXPECT_TRUE(writer.gso());  // Still on, for narrower runs.
  for (const std::string& bytes : wide) EXPECT_EQ(peer.Receive(), bytes);
  // As wide again: not tried.
  for (const std::string& bytes : wide) ASSERT_TRUE(writer.Queue(&peer.storage, peer.storage_length, bytes).ok());
  flushed = writer.Flush(*fd);
  EXPECT_TRUE(flushed.gso_refused.ok());
  EXPECT_EQ(writer.gso_refusals(), 1u);
  for (const std::string& bytes : wide) EXPECT_EQ(peer.Receive(), bytes);
  // Narrow segments are tried, and refused here too: that is no path's doing, and GSO goes off.
  std::vector<std::string> narrow;
  for (int i = 0; i < 10; ++i) narrow.push_back(RunDatagram(i, 500));
  for (const std::string& bytes : narrow) ASSERT_TRUE(writer.Queue(&peer.storage, peer.storage_length, bytes).ok());
  flushed = writer.Flush(*fd);
  EXPECT_FALSE(flushed.gso_refused.ok());
  EXPECT_EQ(flushed.sent, narrow.size());
  EXPECT_FALSE(writer.gso());
  EXPECT_EQ(writer.gso_refusals(), 2u);
  for (const std::string& bytes : narrow) EXPECT_EQ(peer.Receive(), bytes);
  ::close(*fd);
}

}  // namespace
}  // namespace gev
