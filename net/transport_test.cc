// Connection through its transport seam, under a fake transport of the test's own (as Envoy
// tests its connection under a mock transport socket): what the seam promises holds of any
// transport, not only of TLS. The fake's wire protocol: the peer sends "HELLO" and is answered
// "HELLO" (the handshake); then every byte travels XORed with 0x5a; the transport's last words
// before a FIN are "END" (unXORed); a '!' in the plaintext is a protocol error.

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "gtest/gtest.h"
#include "net/acceptor.h"
#include "net/connection.h"
#include "net/testing/loop_blocker.h"
#include "net/testing/loopback_client.h"
#include "net/transport.h"

namespace gev {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::ReadExactly;
using ::gev::testing::ReadToEnd;
using ::gev::testing::WaitFor;
using ::gev::testing::WriteAll;

std::string Xor(std::string_view bytes) {
  std::string out(bytes);
  for (char& c : out) c = static_cast<char>(c ^ 0x5a);
  return out;
}

class XorTransport final : public Transport {
 public:
  // `end_with_data`: a read whose bytes are followed by the peer's end reports both at once, as
  // TLS's does when a record and close_notify arrive together.
  XorTransport(absl::Duration handshake_timeout, bool end_with_data)
      : handshake_timeout_(handshake_timeout), end_with_data_(end_with_data) {}

  absl::Status Start(TransportIo) override { return absl::OkStatus(); }

  ReadResult Read(TransportIo io, RingBuffer& input) override {
    ReadResult result;
    char buffer[65536];
    ssize_t n = ::read(io.fd(), buffer, sizeof(buffer));
    if (n == 0) {
      result.peer_closed = true;
      return result;
    }
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        result.error = absl::ErrnoToStatus(errno, "read");
      }
      return result;
    }
    io.CountRead(static_cast<size_t>(n));
    std::string_view bytes(buffer, static_cast<size_t>(n));
    if (!established_) {
      size_t wanted = 5 - hello_.size();
      hello_.append(bytes.substr(0, wanted));
      bytes.remove_prefix(std::min(wanted, bytes.size()));
      if (hello_.size() < 5) return result;
      if (hello_ != "HELLO") {
        result.error = absl::InvalidArgumentError("XOR: bad handshake");
        return result;
      }
      established_ = true;
      result.established = true;
      (void)io.Write("HELLO");
    }
    std::string plain = Xor(bytes);
    size_t bang = plain.find('!');
    if (!input.WriteString(plain.substr(0, bang))) {
      result.error = absl::ResourceExhaustedError("input buffer limit exceeded");
    } else if (bang != std::string::npos) {
      result.error = absl::InvalidArgumentError("XOR: bang");
    }
    char next;
    if (end_with_data_ && ::recv(io.fd(), &next, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
      result.peer_closed = true;
    }
    return result;
  }

  absl::Status Write(TransportIo io, std::string_view plaintext) override {
    if (!io.Write(Xor(plaintext))) return absl::FailedPreconditionError("closed for writing");
    return absl::OkStatus();
  }

  void Shutdown(TransportIo io) override { (void)io.Write("END"); }

  absl::Duration handshake_timeout() const override { return handshake_timeout_; }
  const char* name() const override { return "XOR"; }

 private:
  const absl::Duration handshake_timeout_;
  const bool end_with_data_;
  bool established_ = false;
  std::string hello_;
};

class XorFactory final : public TransportFactory {
 public:
  XorFactory(absl::Duration handshake_timeout, bool end_with_data)
      : handshake_timeout_(handshake_timeout), end_with_data_(end_with_data) {}
  absl::StatusOr<std::unique_ptr<Transport>> NewTransport(const TransportContext&) override {
    return std::make_unique<XorTransport>(handshake_timeout_, end_with_data_);
  }

 private:
  const absl::Duration handshake_timeout_;
  const bool end_with_data_;
};

// One loop thread, an acceptor and the connections it makes, all with the XOR transport;
// records what the callbacks saw.
class XorServer {
 public:
  struct Hooks {
    std::function<void(const ConnectionPtr&, RingBuffer&)> on_message;  // Default: echo.
    bool end_with_data = false;  // See XorTransport.
  };

  explicit XorServer(Hooks hooks, absl::Duration handshake_timeout = absl::Seconds(5))
      : hooks_(std::move(hooks)), loop_(*EventLoop::Create()) {
    auto config = std::make_shared<Connection::Config>();
    config->loop = loop_;
    config->transport = std::make_shared<XorFactory>(handshake_timeout, hooks_.end_with_data);
    config->callbacks.on_connect = [this](const ConnectionPtr&) { Record("connect"); };
    config->callbacks.on_message = [this](const ConnectionPtr& c, RingBuffer& input) {
      Record("message:" + input.Bytes());
      if (hooks_.on_message) {
        hooks_.on_message(c, input);
      } else {
        (void)c->SendFromBuffer(input, input.Length());
      }
    };
    config->callbacks.on_close = [this](const ConnectionPtr& c, const absl::Status& reason) {
      RecordEnd(c, "close:", reason);
    };
    config->callbacks.on_transport_error = [this](const ConnectionPtr& c,
                                                  const absl::Status& reason) {
      RecordEnd(c, "transport error:", reason);
    };
    config_ = std::move(config);
    auto acceptor = Acceptor::Create(loop_.get(), InetAddress::Loopback(0), false);
    EXPECT_TRUE(acceptor.ok()) << acceptor.status();
    acceptor_ = std::move(*acceptor);
    acceptor_->set_new_connection_callback([this](int fd, const InetAddress& peer) {
      ConnectionPtr connection = Connection::Create(config_, fd, peer);
      connections_[connection.get()] = connection;
      connection->Establish();
    });
    address_ = acceptor_->listen_address().inet();
    thread_ = std::thread([this] { loop_->Run(); });
    RunAndWait([this] { ASSERT_TRUE(acceptor_->Listen().ok()); });
  }
  ~XorServer() {
    RunAndWait([this] {
      acceptor_.reset();
      for (auto& [raw, connection] : connections_) connection->ForceClose();
    });
    RunAndWait([] {});
    loop_->Stop();
    thread_.join();
  }

  const InetAddress& address() const { return address_; }
  template <typename F>
  void RunAndWait(F f) {
    std::promise<void> done;
    loop_->RunInLoop([&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }
  // Holds the loop in a task until the returned promise is set.
  std::promise<void> BlockLoop() { return testing::BlockLoop(*loop_); }
  // The connections open now (on the loop thread).
  std::vector<ConnectionPtr> Connections() {
    std::vector<ConnectionPtr> open;
    RunAndWait([&] {
      for (auto& [raw, connection] : connections_) open.push_back(connection);
    });
    return open;
  }
  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  std::vector<absl::Status> reasons() {
    std::lock_guard<std::mutex> lock(mutex_);
    return reasons_;
  }

 private:
  void RecordEnd(const ConnectionPtr& c, const char* what, const absl::Status& reason) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(absl::StrCat(what, absl::StatusCodeToString(reason.code())));
      reasons_.push_back(reason);
    }
    connections_.erase(c.get());
  }
  void Record(std::string event) {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(event));
  }

  Hooks hooks_;
  std::shared_ptr<EventLoop> loop_;
  std::shared_ptr<const Connection::Config> config_;
  std::unique_ptr<Acceptor> acceptor_;
  InetAddress address_;
  std::thread thread_;
  std::map<Connection*, ConnectionPtr> connections_;  // Loop thread only.
  std::mutex mutex_;
  std::vector<std::string> events_;
  std::vector<absl::Status> reasons_;
};


TEST(TransportSeamTest, OnConnectWaitsForTheHandshakeAndBytesAreTransformedBothWays) {
  XorServer server({});
  int peer = Connect(server.address());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(server.events().empty()) << "on_connect before the handshake";
  ASSERT_TRUE(WriteAll(peer, "HELLO"));
  EXPECT_EQ(ReadExactly(peer, 5), "HELLO");
  ASSERT_TRUE(WaitFor([&] { return server.events().size() == 1; }));
  EXPECT_EQ(server.events()[0], "connect");
  std::string large(200 * 1024, ' ');  // Letters only: a '!' would be the fake's error.
  for (size_t i = 0; i < large.size(); ++i) {
    large[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  }
  ASSERT_TRUE(WriteAll(peer, Xor("ping")));
  EXPECT_EQ(ReadExactly(peer, 4), Xor("ping"));  // Echoed as plaintext, XORed on the wire.
  ASSERT_TRUE(WriteAll(peer, Xor(large)));
  EXPECT_TRUE(ReadExactly(peer, large.size()) == Xor(large));
  ::close(peer);
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_TRUE(server.reasons()[0].ok()) << server.reasons()[0];
}

TEST(TransportSeamTest, AHandshakeThatNeverEndsTimesOutWithoutOnConnect) {
  XorServer server({}, absl::Milliseconds(200));
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HEL"));  // Begun, never finished.
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_EQ(server.events(), std::vector<std::string>{"transport error:DEADLINE_EXCEEDED"});
  EXPECT_NE(server.reasons()[0].message().find("XOR handshake not completed in time"),
            std::string::npos)
      << server.reasons()[0];
  EXPECT_TRUE(gev::testing::SeesEndOfStream(peer));
  ::close(peer);
}

TEST(TransportSeamTest, TheTransportsLastWordsGoOutBeforeTheFin) {
  XorServer server({.on_message = [](const ConnectionPtr& c, RingBuffer& input) {
    input.RetrieveAll();
    EXPECT_TRUE(c->Send("bye").ok());
    c->ShutdownWrite();
  }});
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HELLO" + Xor("x")));
  bool reset = true;
  EXPECT_EQ(ReadToEnd(peer, &reset), "HELLO" + Xor("bye") + "END");
  EXPECT_FALSE(reset);
  ::close(peer);
}

// A reply and a Close() in the connection's own callback: the reply is flushed when the callback
// returns, and the last words that flush leads to still go out, then the FIN.
TEST(TransportSeamTest, AReplyThenCloseInOnMessageSendsTheLastWordsThenTheFin) {
  XorServer server({.on_message = [](const ConnectionPtr& c, RingBuffer& input) {
    input.RetrieveAll();
    EXPECT_TRUE(c->Send("bye").ok());
    c->Close();
  }});
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HELLO" + Xor("x")));
  bool reset = true;
  EXPECT_EQ(ReadToEnd(peer, &reset), "HELLO" + Xor("bye") + "END");
  EXPECT_FALSE(reset);
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_TRUE(server.reasons()[0].ok()) << server.reasons()[0];
  ::close(peer);
}

// A request and the peer's end in one transport read (as a TLS record and close_notify): the
// reply, gathered, then the last words the end leads to, then the FIN.
TEST(TransportSeamTest, ARequestAndThePeersEndInOneReadGetTheReplyAndTheLastWords) {
  XorServer server({.on_message =
                        [](const ConnectionPtr& c, RingBuffer& input) {
                          input.RetrieveAll();
                          EXPECT_TRUE(c->Send("pong").ok());
                        },
                    .end_with_data = true});
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HELLO"));
  EXPECT_EQ(ReadExactly(peer, 5), "HELLO");
  {
    // Both there before the server reads: one event.
    std::promise<void> release = server.BlockLoop();
    ASSERT_TRUE(WriteAll(peer, Xor("ping")));
    ::shutdown(peer, SHUT_WR);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release.set_value();
  }
  bool reset = true;
  EXPECT_EQ(ReadToEnd(peer, &reset), Xor("pong") + "END");
  EXPECT_FALSE(reset);
  ::close(peer);
}

TEST(TransportSeamTest, AReadErrorDeliversWhatCameBeforeItThenEndsWithItsReason) {
  XorServer server({.on_message = [](const ConnectionPtr&, RingBuffer& input) {
    input.RetrieveAll();
  }});
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HELLO" + Xor("abc!def")));
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_EQ(server.events(),
            (std::vector<std::string>{"connect", "message:abc", "close:INVALID_ARGUMENT"}));
  EXPECT_EQ(server.reasons()[0].message(), "XOR: bang");
  bool reset = true;
  EXPECT_EQ(ReadToEnd(peer, &reset), "HELLO");  // The handshake's answer, then the end:
  EXPECT_FALSE(reset);                          // a FIN, the alert (none here) having gone first.
  ::close(peer);
}

TEST(TransportSeamTest, ABadHandshakeEndsTheConnectionBeforeOnConnect) {
  XorServer server({});
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HOWDY"));
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_EQ(server.events(), std::vector<std::string>{"transport error:INVALID_ARGUMENT"});
  ::close(peer);
}

TEST(TransportSeamTest, DuringTheHandshakeTheConnectionIsHandshakingNotConnected) {
  XorServer server({});
  int peer = Connect(server.address());
  std::vector<ConnectionPtr> open;
  ASSERT_TRUE(WaitFor([&] { return !(open = server.Connections()).empty(); }));
  ConnectionPtr connection = open[0];
  EXPECT_EQ(connection->state(), Connection::State::kHandshaking);
  EXPECT_FALSE(connection->Connected());
  absl::Status sent = connection->Send("early");  // From this thread: not accepted.
  EXPECT_EQ(sent.code(), absl::StatusCode::kFailedPrecondition) << sent;
  server.RunAndWait([&] {
    absl::Status in_loop = connection->SendSlices({"early", {}});
    EXPECT_EQ(in_loop.code(), absl::StatusCode::kFailedPrecondition) << in_loop;
    EXPECT_EQ(connection->PendingOutput(), 0u);
  });
  ASSERT_TRUE(WriteAll(peer, "HELLO"));
  EXPECT_EQ(ReadExactly(peer, 5), "HELLO");
  // The state turns kConnected just before OnConnect runs on the loop: wait for the callback.
  ASSERT_TRUE(WaitFor([&] { return server.events().size() == 1; }));
  EXPECT_TRUE(connection->Connected());
  EXPECT_EQ(connection->state(), Connection::State::kConnected);
  EXPECT_EQ(server.events(), std::vector<std::string>{"connect"});
  ::close(peer);
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_EQ(server.events(), (std::vector<std::string>{"connect", "close:OK"}));
}

TEST(TransportSeamTest, ACloseDuringTheHandshakeEndsWithTheTransportErrorNotOnClose) {
  XorServer server({});
  int peer = Connect(server.address());
  std::vector<ConnectionPtr> open;
  ASSERT_TRUE(WaitFor([&] { return !(open = server.Connections()).empty(); }));
  open[0]->Close(absl::CancelledError("owner stopping"));
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_EQ(server.events(), std::vector<std::string>{"transport error:CANCELLED"});
  EXPECT_EQ(server.reasons()[0].message(), "owner stopping");
  EXPECT_TRUE(gev::testing::SeesEndOfStream(peer));
  ::close(peer);
  // An orderly Close() (a server stopping) is still a handshake that did not complete.
  int second = Connect(server.address());
  ASSERT_TRUE(WaitFor([&] { return !(open = server.Connections()).empty(); }));
  open[0]->Close();
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 2; }));
  EXPECT_EQ(server.events()[1], "transport error:CANCELLED");
  EXPECT_EQ(server.reasons()[1].message(), "closed before the handshake completed");
  ::close(second);
}

TEST(TransportSeamTest, APeerThatLeavesDuringTheHandshakeIsATransportError) {
  XorServer server({});
  int peer = Connect(server.address());
  ASSERT_TRUE(WriteAll(peer, "HEL"));
  ::shutdown(peer, SHUT_WR);
  ASSERT_TRUE(WaitFor([&] { return server.reasons().size() == 1; }));
  EXPECT_EQ(server.events(), std::vector<std::string>{"transport error:UNAVAILABLE"});
  EXPECT_EQ(server.reasons()[0].message(), "XOR: peer closed during the handshake");
  ::close(peer);
}

}  // namespace
}  // namespace gev
