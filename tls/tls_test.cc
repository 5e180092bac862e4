// Tests of //tls: gev servers and clients over TLS, against a blocking OpenSSL client written
// here (and gev's own Client), on loopback. Certificates are made when the test runs.

#include "tls/tls.h"

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/client.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"
#include "tls/testing/test_certificates.h"

namespace gev::tls {
namespace {

using ::gev::testing::Pattern;
using ::gev::testing::ReadExactly;
using ::gev::testing::ServerThread;
using ::gev::testing::WaitFor;
using ::gev::testing::WriteAll;

// The CA and leaf certificates of every test, made once.
struct Certificates {
  testing::TestCa ca = testing::TestCa::Create("gev test CA");
  CertificateKeyPair localhost = ca.Issue("localhost", {"localhost"}, {"127.0.0.1"});
  testing::TestCa other_ca = testing::TestCa::Create("another CA");
};

const Certificates& Certs() {
  static const Certificates* const certs = new Certificates;
  return *certs;
}

ServerConfig LocalhostConfig() {
  ServerConfig config;
  config.certificate = Certs().localhost;
  return config;
}

std::shared_ptr<ServerContext> MustCreate(ServerConfig config) {
  absl::StatusOr<std::shared_ptr<ServerContext>> context = ServerContext::Create(std::move(config));
  EXPECT_TRUE(context.ok()) << context.status();
  return context.ok() ? *context : nullptr;
}

// Echoes; records what the callbacks saw. The callbacks run on loop threads, the checks on the
// test's: everything under one mutex.
class RecordingEcho : public Handler {
 public:
  void OnConnect(Connection& conn) override {
    ConnectionInfo info = Info(conn);
    std::lock_guard<std::mutex> lock(mutex_);
    infos_.push_back(info);
    last_ = conn.shared_from_this();
    connects_.fetch_add(1);
  }
  Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
    if (shutdown_on_ != 0 && buffer.Length() > 0 && buffer.At(0) == shutdown_on_) {
      buffer.Retrieve(1);
      conn.ShutdownWrite();
      return Reply();
    }
    return Reply::FromBuffer(buffer.Length());
  }
  void OnClose(Connection&, const absl::Status& reason) override {
    std::lock_guard<std::mutex> lock(mutex_);
    close_reasons_.push_back(reason);
    closes_.fetch_add(1);
  }
  void OnTransportError(Connection&, const absl::Status& reason) override {
    std::lock_guard<std::mutex> lock(mutex_);
    transport_errors_.push_back(reason);
    transport_error_count_.fetch_add(1);
  }
  void OnHighWater(Connection& conn, size_t pending) override {
    high_waters_.fetch_add(1);
    max_pending_seen_.store(std::max(max_pending_seen_.load(), pending));
    (void)conn;
  }
  int high_waters() const { return high_waters_.load(); }

  // A first byte that makes the server ShutdownWrite() instead of echoing.
  void set_shutdown_on(char byte) { shutdown_on_ = byte; }

  int connects() const { return connects_.load(); }
  int closes() const { return closes_.load(); }
  int transport_error_count() const { return transport_error_count_.load(); }
  ConnectionInfo info(size_t i) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return i < infos_.size() ? infos_[i] : ConnectionInfo();
  }
  absl::Status close_reason(size_t i) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return i < close_reasons_.size() ? close_reasons_[i] : absl::UnknownError("none yet");
  }
  absl::Status transport_error(size_t i) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return i < transport_errors_.size() ? transport_errors_[i] : absl::UnknownError("none yet");
  }
  ConnectionPtr last() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_;
  }

 private:
  char shutdown_on_ = 0;
  mutable std::mutex mutex_;
  std::vector<ConnectionInfo> infos_;
  std::vector<absl::Status> close_reasons_;
  std::vector<absl::Status> transport_errors_;
  ConnectionPtr last_;
  std::atomic<int> connects_{0};
  std::atomic<int> closes_{0};
  std::atomic<int> transport_error_count_{0};
  std::atomic<int> high_waters_{0};
  std::atomic<size_t> max_pending_seen_{0};
};

// A blocking TLS client over a loopback socket with 5 s timeouts.
class BlockingTlsClient {
 public:
  struct Options {
    std::string ca_pem = Certs().ca.pem();
    std::string server_name = "localhost";  // SNI and the name checked; empty: neither.
    std::string alpn;                       // One protocol offered, or none.
    int min_version = TLS1_2_VERSION;
    int max_version = 0;
    SSL_SESSION* session = nullptr;  // To resume.
    bool allow_renegotiation = false;
    bool check_name = true;  // Verify that the certificate carries server_name.
  };

  BlockingTlsClient(const InetAddress& address, const Options& options) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    // Level 0, so that a TLS 1.1 client can be made to test that the server refuses it.
    SSL_CTX_set_security_level(ctx_, 0);
    SSL_CTX_set_min_proto_version(ctx_, options.min_version);
    SSL_CTX_set_max_proto_version(ctx_, options.max_version);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
    BIO* bio = BIO_new_mem_buf(options.ca_pem.data(), static_cast<int>(options.ca_pem.size()));
    while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, ca);
      X509_free(ca);
    }
    BIO_free(bio);
    ERR_clear_error();
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    // Out of the context's store: freeing the context would mark the sessions stale.
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (!options.alpn.empty()) {
      std::string wire = std::string(1, static_cast<char>(options.alpn.size())) + options.alpn;
      SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned int>(wire.size()));
    }
    if (options.allow_renegotiation) SSL_CTX_clear_options(ctx_, SSL_OP_NO_RENEGOTIATION);
    fd_ = gev::testing::Connect(address);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (!options.server_name.empty()) {
      SSL_set_tlsext_host_name(ssl_, options.server_name.c_str());
      if (options.check_name) SSL_set1_host(ssl_, options.server_name.c_str());
    }
    if (options.session != nullptr) SSL_set_session(ssl_, options.session);
  }
  ~BlockingTlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  int fd() const { return fd_; }
  SSL* ssl() const { return ssl_; }

  // OK, or why the handshake failed.
  absl::Status Handshake() {
    if (fd_ < 0) return absl::UnavailableError("connect failed");
    if (SSL_connect(ssl_) == 1) return absl::OkStatus();
    return absl::UnavailableError(Errors());
  }
  bool Write(std::string_view data) {
    size_t written = 0;
    return SSL_write_ex(ssl_, data.data(), data.size(), &written) == 1 &&
           written == data.size();
  }
  // Up to `n` bytes: fewer on close_notify, EOF, error or timeout.
  std::string Read(size_t n) {
    std::string out;
    std::vector<char> chunk(64 * 1024);
    while (out.size() < n) {
      size_t got = 0;
      if (SSL_read_ex(ssl_, chunk.data(), std::min(chunk.size(), n - out.size()), &got) != 1) {
        last_read_error_ = SSL_get_error(ssl_, 0);
        break;
      }
      out.append(chunk.data(), got);
    }
    return out;
  }
  // True when the next read is the peer's close_notify.
  bool SeesCloseNotify() {
    char byte;
    size_t got = 0;
    int result = SSL_read_ex(ssl_, &byte, 1, &got);
    return result != 1 && SSL_get_error(ssl_, result) == SSL_ERROR_ZERO_RETURN;
  }
  // The session to resume with, after some data has been read (TLS 1.3 tickets come after
  // the handshake). The caller frees it.
  SSL_SESSION* Session() const { return SSL_get1_session(ssl_); }
  std::string PeerCommonName() const {
    X509* peer = SSL_get0_peer_certificate(ssl_);
    if (peer == nullptr) return "";
    char name[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, name, sizeof(name));
    return name;
  }

 private:
  static std::string Errors() {
    std::string text;
    while (unsigned long error = ERR_get_error()) {
      char buffer[256];
      ERR_error_string_n(error, buffer, sizeof(buffer));
      absl::StrAppend(&text, buffer, "; ");
    }
    return text.empty() ? "handshake failed" : text;
  }

  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  int last_read_error_ = 0;
};

// A TLS server on loopback, serving on a thread for the test's length.
struct TlsServer {
  TlsServer(Handler* handler, std::shared_ptr<ServerContext> context_in,
            std::vector<Option> extra = {})
      : context(std::move(context_in)) {
    std::vector<Option> options = {Address("127.0.0.1:0"), NumLoops(2),
                                   WithTransport(ServerTransport(context))};
    for (Option& option : extra) options.push_back(std::move(option));
    ServerOptions server_options;
    for (Option& option : options) option(server_options);
    absl::StatusOr<std::unique_ptr<Server>> created =
        Server::Create(handler, std::move(server_options));
    EXPECT_TRUE(created.ok()) << created.status();
    server = *std::move(created);
    running = std::make_unique<ServerThread>(server.get());
  }
  ~TlsServer() { running.reset(); }
  const InetAddress& address() const { return server->ListenAddress(); }

  std::shared_ptr<ServerContext> context;
  std::unique_ptr<Server> server;
  std::unique_ptr<ServerThread> running;
};

class TlsServerModes : public ::testing::TestWithParam<bool> {};

TEST_P(TlsServerModes, EchoesOverTls13AndCallsOnConnectAfterTheHandshake) {
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()), {ReusePort(GetParam())});
  BlockingTlsClient client(tls.address(), {});
  // Connected but no ClientHello yet: no OnConnect.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(handler.connects(), 0);
  ASSERT_TRUE(client.Handshake().ok());
  EXPECT_STREQ(SSL_get_version(client.ssl()), "TLSv1.3");
  std::string payload = Pattern(300 * 1024, 1);
  ASSERT_TRUE(client.Write(payload));
  EXPECT_EQ(client.Read(payload.size()), payload);
  ASSERT_EQ(handler.connects(), 1);
  ConnectionInfo info = handler.info(0);
  EXPECT_TRUE(info.tls);
  EXPECT_EQ(info.version, "TLSv1.3");
  EXPECT_EQ(info.server_name, "localhost");
  EXPECT_FALSE(info.session_reused);
  EXPECT_FALSE(info.cipher.empty());
}

INSTANTIATE_TEST_SUITE_P(AcceptorAndReusePort, TlsServerModes, ::testing::Bool());

TEST(TlsServer, AllowsTls12UnlessToldNotAndRefusesOlder) {
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()));
  BlockingTlsClient::Options tls12;
  tls12.max_version = TLS1_2_VERSION;
  BlockingTlsClient old_client(tls.address(), tls12);
  ASSERT_TRUE(old_client.Handshake().ok());
  EXPECT_STREQ(SSL_get_version(old_client.ssl()), "TLSv1.2");
  ASSERT_TRUE(old_client.Write("twelve"));
  EXPECT_EQ(old_client.Read(6), "twelve");

  BlockingTlsClient::Options tls11;
  tls11.min_version = TLS1_1_VERSION;
  tls11.max_version = TLS1_1_VERSION;
  BlockingTlsClient older(tls.address(), tls11);
  EXPECT_FALSE(older.Handshake().ok());
  ASSERT_TRUE(WaitFor([&] { return handler.transport_error_count() == 1; }));
  EXPECT_TRUE(absl::StrContains(handler.transport_error(0).message(), "TLS handshake failed"))
      << handler.transport_error(0);

  RecordingEcho strict_handler;
  ServerConfig strict = LocalhostConfig();
  strict.allow_tls12 = false;
  TlsServer strict_server(&strict_handler, MustCreate(strict));
  BlockingTlsClient refused(strict_server.address(), tls12);
  EXPECT_FALSE(refused.Handshake().ok());
  ASSERT_TRUE(WaitFor([&] { return strict_handler.transport_error_count() == 1; }));
  EXPECT_EQ(strict_handler.connects(), 0);
  EXPECT_EQ(strict_handler.closes(), 0);  // A failed handshake is no connection to close.
}

TEST(TlsServer, SelectsAlpnAndRefusesAClientWithNoCommonProtocol) {
  RecordingEcho handler;
  ServerConfig config = LocalhostConfig();
  config.alpn = {"h2", "http/1.1"};
  TlsServer tls(&handler, MustCreate(config));
  BlockingTlsClient::Options http11;
  http11.alpn = "http/1.1";
  BlockingTlsClient client(tls.address(), http11);
  ASSERT_TRUE(client.Handshake().ok());
  const unsigned char* selected = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(client.ssl(), &selected, &length);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(selected), length), "http/1.1");
  ASSERT_TRUE(WaitFor([&] { return handler.connects() == 1; }));
  EXPECT_EQ(handler.info(0).alpn, "http/1.1");

  BlockingTlsClient::Options spdy;
  spdy.alpn = "spdy/3";
  BlockingTlsClient refused(tls.address(), spdy);
  absl::Status handshake = refused.Handshake();
  EXPECT_TRUE(absl::StrContains(handshake.message(), "no application protocol")) << handshake;
  ASSERT_TRUE(WaitFor([&] { return handler.transport_error_count() == 1; }));
  EXPECT_EQ(handler.connects(), 1);

  // A client that offers no ALPN is served (ALPN is the client's choice to make).
  BlockingTlsClient plain(tls.address(), {});
  ASSERT_TRUE(plain.Handshake().ok());
  ASSERT_TRUE(WaitFor([&] { return handler.connects() == 2; }));
  EXPECT_EQ(handler.info(1).alpn, "");
}

TEST(TlsServer, ChoosesTheCertificateByServerName) {
  const Certificates& certs = Certs();
  ServerConfig config = LocalhostConfig();
  config.sni_certificates = {certs.ca.Issue("alpha", {"alpha.test"}),
                             certs.ca.Issue("wildcard", {"*.beta.test"})};
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(config));
  struct Case {
    std::string name;
    std::string common_name;
  };
  for (const Case& c : {Case{"alpha.test", "alpha"}, Case{"ALPHA.test", "alpha"},
                        Case{"x.beta.test", "wildcard"}, Case{"localhost", "localhost"}}) {
    BlockingTlsClient::Options options;
    options.server_name = c.name;
    BlockingTlsClient client(tls.address(), options);
    ASSERT_TRUE(client.Handshake().ok()) << c.name;
    EXPECT_EQ(client.PeerCommonName(), c.common_name) << c.name;
    ASSERT_TRUE(client.Write("x"));
    EXPECT_EQ(client.Read(1), "x");
  }
  // A name no certificate has gets the default one.
  BlockingTlsClient::Options unknown;
  unknown.server_name = "a.b.beta.test";
  unknown.check_name = false;
  BlockingTlsClient client(tls.address(), unknown);
  ASSERT_TRUE(client.Handshake().ok());
  EXPECT_EQ(client.PeerCommonName(), "localhost");
  ASSERT_TRUE(WaitFor([&] { return handler.connects() == 5; }));
  EXPECT_EQ(handler.info(4).server_name, "a.b.beta.test");
}

// A session of a finished TLS 1.3 connection: one round trip reads the server's tickets.
SSL_SESSION* SessionFrom(const InetAddress& address, SSL_SESSION* resume, bool* reused) {
  BlockingTlsClient::Options options;
  options.session = resume;
  BlockingTlsClient client(address, options);
  if (!client.Handshake().ok()) return nullptr;
  *reused = SSL_session_reused(client.ssl()) == 1;
  if (!client.Write("t") || client.Read(1) != "t") return nullptr;
  // OpenSSL forgets (marks not resumable) the session of a connection freed before it sent
  // close_notify.
  (void)SSL_shutdown(client.ssl());
  return client.Session();
}

TEST(TlsServer, ResumesByTicketsAcrossOneKeyRotationButNotTwo) {
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()));
  bool reused = true;
  SSL_SESSION* first = SessionFrom(tls.address(), nullptr, &reused);
  ASSERT_NE(first, nullptr);
  EXPECT_FALSE(reused);
  SSL_SESSION* second = SessionFrom(tls.address(), first, &reused);
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(reused);
  ASSERT_TRUE(WaitFor([&] { return handler.connects() == 2; }));
  EXPECT_TRUE(handler.info(1).session_reused);

  tls.context->RotateTicketKeys();
  SSL_SESSION* third = SessionFrom(tls.address(), second, &reused);
  ASSERT_NE(third, nullptr);
  EXPECT_TRUE(reused) << "a ticket of the previous key is still accepted";

  // Tickets of `first` (and `second`) came under the key now two rotations old.
  tls.context->RotateTicketKeys();
  tls.context->RotateTicketKeys();
  SSL_SESSION* fourth = SessionFrom(tls.address(), third, &reused);
  ASSERT_NE(fourth, nullptr);
  EXPECT_FALSE(reused);
  for (SSL_SESSION* session : {first, second, third, fourth}) SSL_SESSION_free(session);

  // Reload keeps the keys: resumption survives it.
  bool reused_after_reload = false;
  SSL_SESSION* before_reload = SessionFrom(tls.address(), nullptr, &reused);
  ASSERT_TRUE(tls.context->Reload(LocalhostConfig()).ok());
  SSL_SESSION* after_reload = SessionFrom(tls.address(), before_reload, &reused_after_reload);
  EXPECT_TRUE(reused_after_reload);
  SSL_SESSION_free(before_reload);
  SSL_SESSION_free(after_reload);
}

TEST(TlsServer, WithoutTicketsEveryHandshakeIsFull) {
  RecordingEcho handler;
  ServerConfig config = LocalhostConfig();
  config.session_tickets = false;
  TlsServer tls(&handler, MustCreate(config));
  bool reused = true;
  SSL_SESSION* first = SessionFrom(tls.address(), nullptr, &reused);
  ASSERT_NE(first, nullptr);
  SSL_SESSION* second = SessionFrom(tls.address(), first, &reused);
  EXPECT_FALSE(reused);
  SSL_SESSION_free(first);
  SSL_SESSION_free(second);
}

TEST(TlsServer, ReloadServesNewHandshakesTheNewCertificateAndKeepsOpenConnections) {
  const Certificates& certs = Certs();
  ServerConfig first = LocalhostConfig();
  first.certificate = certs.ca.Issue("first", {"localhost"});
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(first));
  EXPECT_EQ(tls.context->generation(), 1u);
  BlockingTlsClient before(tls.address(), {});
  ASSERT_TRUE(before.Handshake().ok());
  EXPECT_EQ(before.PeerCommonName(), "first");

  ServerConfig second = LocalhostConfig();
  second.certificate = certs.ca.Issue("second", {"localhost"});
  ASSERT_TRUE(tls.context->Reload(second).ok());
  EXPECT_EQ(tls.context->generation(), 2u);
  BlockingTlsClient after(tls.address(), {});
  ASSERT_TRUE(after.Handshake().ok());
  EXPECT_EQ(after.PeerCommonName(), "second");
  ASSERT_TRUE(before.Write("still"));
  EXPECT_EQ(before.Read(5), "still");

  // A bad set is refused and the current one stays.
  ServerConfig mismatched = LocalhostConfig();
  mismatched.certificate.key_pem = certs.ca.Issue("other", {"localhost"}).key_pem;
  EXPECT_FALSE(tls.context->Reload(mismatched).ok());
  EXPECT_EQ(tls.context->generation(), 2u);

  // From files, read again by ReloadFiles().
  std::string dir = ::testing::TempDir();
  std::string chain = dir + "/reload_chain.pem";
  std::string key = dir + "/reload_key.pem";
  CertificateKeyPair third = certs.ca.Issue("third", {"localhost"});
  testing::WriteFile(chain, third.chain_pem);
  testing::WriteFile(key, third.key_pem);
  ServerConfig from_files;
  from_files.certificate.chain_file = chain;
  from_files.certificate.key_file = key;
  ASSERT_TRUE(tls.context->Reload(from_files).ok());
  CertificateKeyPair fourth = certs.ca.Issue("fourth", {"localhost"});
  testing::WriteFile(chain, fourth.chain_pem);
  testing::WriteFile(key, fourth.key_pem);
  ASSERT_TRUE(tls.context->ReloadFiles().ok());
  BlockingTlsClient renewed(tls.address(), {});
  ASSERT_TRUE(renewed.Handshake().ok());
  EXPECT_EQ(renewed.PeerCommonName(), "fourth");
}

TEST(TlsServer, RejectsAKeyThatDoesNotMatchItsCertificate) {
  ServerConfig config = LocalhostConfig();
  config.certificate.key_pem = Certs().ca.Issue("x", {"x"}).key_pem;
  absl::StatusOr<std::shared_ptr<ServerContext>> context = ServerContext::Create(config);
  EXPECT_EQ(context.status().code(), absl::StatusCode::kInvalidArgument) << context.status();
}

TEST(TlsServer, ShutdownWriteSendsCloseNotifyAndServerSendsFromAnyThread) {
  RecordingEcho handler;
  handler.set_shutdown_on('!');
  TlsServer tls(&handler, MustCreate(LocalhostConfig()));
  BlockingTlsClient client(tls.address(), {});
  ASSERT_TRUE(client.Handshake().ok());
  ASSERT_TRUE(client.Write("ab"));
  EXPECT_EQ(client.Read(2), "ab");
  ASSERT_TRUE(WaitFor([&] { return handler.last() != nullptr; }));
  // From the test's thread: queued to the loop, encrypted there.
  ASSERT_TRUE(handler.last()->Send("from another thread").ok());
  EXPECT_EQ(client.Read(19), "from another thread");
  ASSERT_TRUE(client.Write("!"));
  EXPECT_TRUE(client.SeesCloseNotify());
  // Half-closed: the server still reads. Our close_notify then ends the connection cleanly.
  EXPECT_EQ(SSL_shutdown(client.ssl()), 1);
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1; }));
  EXPECT_TRUE(handler.close_reason(0).ok()) << handler.close_reason(0);
}

// With HalfClose: the peer's close_notify ends only its direction; the server answers after
// it, then its own close_notify and FIN end the connection with OK.
class AnswersAfterPeerShutdown : public RecordingEcho {
 public:
  explicit AnswersAfterPeerShutdown(std::string tail) : tail_(std::move(tail)) {}
  void OnPeerShutdown(Connection& conn) override {
    peer_shutdowns_.fetch_add(1);
    EXPECT_TRUE(conn.Send(tail_).ok());
    conn.ShutdownWrite();
  }
  int peer_shutdowns() const { return peer_shutdowns_.load(); }

 private:
  const std::string tail_;
  std::atomic<int> peer_shutdowns_{0};
};

TEST(TlsServer, HalfCloseAnswersAfterThePeersCloseNotifyThenSendsItsOwn) {
  std::string tail(512 * 1024, 'x');
  for (size_t i = 0; i < tail.size(); ++i) tail[i] = static_cast<char>('a' + i % 23);
  AnswersAfterPeerShutdown handler(tail);
  TlsServer tls(&handler, MustCreate(LocalhostConfig()), {HalfClose(true)});
  BlockingTlsClient client(tls.address(), {});
  ASSERT_TRUE(client.Handshake().ok());
  ASSERT_TRUE(client.Write("question"));
  EXPECT_EQ(client.Read(8), "question");
  EXPECT_EQ(SSL_shutdown(client.ssl()), 0);  // Our close_notify is sent; theirs is to come.
  std::string answer = client.Read(tail.size());
  EXPECT_EQ(answer.size(), tail.size());
  EXPECT_TRUE(answer == tail);
  EXPECT_TRUE(client.SeesCloseNotify());
  EXPECT_TRUE(gev::testing::SeesEndOfStream(client.fd()));
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1; }));
  EXPECT_EQ(handler.peer_shutdowns(), 1);
  EXPECT_TRUE(handler.close_reason(0).ok()) << handler.close_reason(0);
}

TEST(TlsServer, APeerThatClosesWithoutCloseNotifyIsReportedSo) {
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()));
  BlockingTlsClient client(tls.address(), {});
  ASSERT_TRUE(client.Handshake().ok());
  ASSERT_TRUE(client.Write("x"));
  EXPECT_EQ(client.Read(1), "x");
  ::shutdown(client.fd(), SHUT_WR);  // A FIN, no close_notify.
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1; }));
  EXPECT_TRUE(absl::StrContains(handler.close_reason(0).message(), "without close_notify"))
      << handler.close_reason(0);
}

// True when the peer closes (EOF or reset) after at most a few records (the tickets the
// client has not read, an alert).
bool EndsAfterAnAlert(int fd) {
  size_t total = 0;
  char buffer[512];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0) return false;  // A timeout.
    total += static_cast<size_t>(n);
    if (total > 4096) return false;
  }
}

// Garbage, truncated and oversized records, renegotiation: each ends that connection with a
// reason while another client goes on being served.
class HostilePeerTest : public ::testing::Test {
 protected:
  HostilePeerTest() : tls_(&handler_, MustCreate(LocalhostConfig())), bystander_(tls_.address(), {}) {
    EXPECT_TRUE(bystander_.Handshake().ok());
  }
  void ExpectBystanderServed() {
    std::string payload = Pattern(20000, 7);
    ASSERT_TRUE(bystander_.Write(payload));
    EXPECT_EQ(bystander_.Read(payload.size()), payload);
  }
  // A TLS 1.2 client that may renegotiate, past one echo; null if that failed.
  std::unique_ptr<BlockingTlsClient> EchoingTls12Client() {
    BlockingTlsClient::Options tls12;
    tls12.max_version = TLS1_2_VERSION;
    tls12.allow_renegotiation = true;
    auto client = std::make_unique<BlockingTlsClient>(tls_.address(), tls12);
    if (!client->Handshake().ok() || !client->Write("x") || client->Read(1) != "x") {
      return nullptr;
    }
    return client;
  }
  // The connection the server has seen second (after the bystander's) ended; its reason.
  absl::Status SecondEnd() {
    EXPECT_TRUE(WaitFor([&] { return handler_.closes() + handler_.transport_error_count() >= 1; }));
    return handler_.closes() > 0 ? handler_.close_reason(0) : handler_.transport_error(0);
  }

  RecordingEcho handler_;
  TlsServer tls_;
  BlockingTlsClient bystander_;
};

TEST_F(HostilePeerTest, GarbageInsteadOfAClientHello) {
  int fd = gev::testing::Connect(tls_.address());
  ASSERT_TRUE(WriteAll(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(gev::testing::SeesEndOfStream(fd));
  absl::Status reason = SecondEnd();
  EXPECT_TRUE(absl::StrContains(reason.message(), "TLS handshake failed")) << reason;
  EXPECT_EQ(handler_.transport_error_count(), 1);
  ::close(fd);
  ExpectBystanderServed();
}

TEST_F(HostilePeerTest, ATruncatedRecordThenEndOfStream) {
  BlockingTlsClient client(tls_.address(), {});
  ASSERT_TRUE(client.Handshake().ok());
  // An application-data record header that promises 100 bytes, 10 of them, then the FIN.
  std::string partial = std::string("\x17\x03\x03\x00\x64", 5) + std::string(10, 'z');
  ASSERT_TRUE(WriteAll(client.fd(), partial));
  ::shutdown(client.fd(), SHUT_WR);
  absl::Status reason = SecondEnd();
  EXPECT_FALSE(reason.ok());
  EXPECT_TRUE(absl::StrContains(reason.message(), "TLS")) << reason;
  ExpectBystanderServed();
}

TEST_F(HostilePeerTest, AnOversizedRecord) {
  BlockingTlsClient client(tls_.address(), {});
  ASSERT_TRUE(client.Handshake().ok());
  // 2^14 + 256 is the most a TLS 1.3 ciphertext may be; this says 0x4800.
  std::string header("\x17\x03\x03\x48\x00", 5);
  ASSERT_TRUE(WriteAll(client.fd(), header + std::string(0x4800, 'o')));
  absl::Status reason = SecondEnd();
  EXPECT_TRUE(absl::StrContains(reason.message(), "TLS error")) << reason;
  EXPECT_TRUE(EndsAfterAnAlert(client.fd()));
  ExpectBystanderServed();
}

TEST_F(HostilePeerTest, ARenegotiationAttempt) {
  std::unique_ptr<BlockingTlsClient> tls12 = EchoingTls12Client();
  ASSERT_NE(tls12, nullptr);
  BlockingTlsClient& client = *tls12;
  ASSERT_EQ(SSL_renegotiate(client.ssl()), 1);
  (void)SSL_do_handshake(client.ssl());  // Sends the ClientHello; its answer does not matter.
  absl::Status reason = SecondEnd();
  EXPECT_TRUE(absl::StrContains(reason.message(), "renegotiation refused")) << reason;
  EXPECT_TRUE(EndsAfterAnAlert(client.fd()));
  ExpectBystanderServed();
}

TEST_F(HostilePeerTest, ARenegotiationAttemptThenSilence) {
  std::unique_ptr<BlockingTlsClient> tls12 = EchoingTls12Client();
  ASSERT_NE(tls12, nullptr);
  BlockingTlsClient& client = *tls12;
  // The renegotiation ClientHello goes out; the client reads nothing after it (non-blocking,
  // so SSL_do_handshake stops at WANT_READ), and so never answers the server's warning.
  ASSERT_EQ(::fcntl(client.fd(), F_SETFL, ::fcntl(client.fd(), F_GETFL) | O_NONBLOCK), 0);
  ASSERT_EQ(SSL_renegotiate(client.ssl()), 1);
  (void)SSL_do_handshake(client.ssl());
  absl::Status reason = SecondEnd();
  EXPECT_TRUE(absl::StrContains(reason.message(), "renegotiation refused")) << reason;
  ExpectBystanderServed();
}

TEST_F(HostilePeerTest, AHandshakeCutShort) {
  BlockingTlsClient client(tls_.address(), {});
  // The first 60 bytes of a ClientHello, then the FIN.
  BIO* memory = BIO_new(BIO_s_mem());
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  SSL_set_bio(ssl, BIO_new(BIO_s_mem()), memory);
  (void)SSL_connect(ssl);  // Writes the ClientHello into `memory`.
  char hello[60];
  ASSERT_EQ(BIO_read(memory, hello, sizeof(hello)), 60);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ASSERT_TRUE(WriteAll(client.fd(), std::string_view(hello, sizeof(hello))));
  ::shutdown(client.fd(), SHUT_WR);
  absl::Status reason = SecondEnd();
  EXPECT_TRUE(absl::StrContains(reason.message(), "the peer closed")) << reason;
  ExpectBystanderServed();
}

TEST(TlsServer, HandshakeTimeoutEndsSilentAndTricklingPeers) {
  RecordingEcho handler;
  ServerConfig config = LocalhostConfig();
  config.handshake_timeout = absl::Milliseconds(300);
  TlsServer tls(&handler, MustCreate(config));
  int silent = gev::testing::Connect(tls.address());
  int trickle = gev::testing::Connect(tls.address());
  // A record header that promises a 512-byte ClientHello, then a byte every 50 ms.
  ASSERT_TRUE(WriteAll(trickle, std::string("\x16\x03\x01\x02\x00", 5)));
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    while (!stop.load() && ::send(trickle, "\x01", 1, MSG_NOSIGNAL) == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  EXPECT_TRUE(gev::testing::SeesEndOfStream(silent));
  ASSERT_TRUE(WaitFor([&] { return handler.transport_error_count() == 2; }));
  stop.store(true);
  trickler.join();
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(handler.transport_error(i).code(), absl::StatusCode::kDeadlineExceeded)
        << handler.transport_error(i);
  }
  // A handshake well within the limit is served, and the timer does not end it later as idle.
  BlockingTlsClient client(tls.address(), {});
  ASSERT_TRUE(client.Handshake().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(client.Write("late"));
  EXPECT_EQ(client.Read(4), "late");
  ::close(silent);
  ::close(trickle);
}

// At max_handshakes a new handshake takes the place of the one of its loop that has gone longest
// without a byte (its count released at once): the quiet half-open sockets lose their places,
// a client in the middle of its handshake does not, and completed handshakes never count.
TEST(TlsServer, AtTheHandshakeCapTheQuietestHalfOpenHandshakeMakesWay) {
  RecordingEcho handler;
  ServerConfig config = LocalhostConfig();
  config.max_handshakes = 10;
  config.handshake_timeout = absl::Seconds(30);  // Nothing times out during the test.
  TlsServer tls(&handler, MustCreate(config));
  std::vector<int> half_open;
  for (int i = 0; i < 10; ++i) half_open.push_back(gev::testing::Connect(tls.address()));
  // Until the ten are accepted (each then counts), a connect could still take a free place.
  ASSERT_TRUE(WaitFor([&] { return tls.server->ConnectionCount() == 10; }))
      << tls.server->ConnectionCount();
  // The first client takes the place of a quiet one; once its handshake completes its place is
  // free again, so the next ones evict nobody.
  for (int i = 0; i < 5; ++i) {
    BlockingTlsClient client(tls.address(), {});
    absl::Status handshake = client.Handshake();
    ASSERT_TRUE(handshake.ok()) << i << ": " << handshake;
    ASSERT_TRUE(client.Write("in"));
    EXPECT_EQ(client.Read(2), "in");
  }
  ASSERT_TRUE(WaitFor([&] { return handler.connects() == 5; }));
  ASSERT_TRUE(WaitFor([&] { return handler.transport_error_count() == 1; }));
  absl::Status evicted = handler.transport_error(0);
  EXPECT_EQ(evicted.code(), absl::StatusCode::kResourceExhausted) << evicted;
  EXPECT_TRUE(absl::StrContains(evicted.message(), "evicted at max_handshakes")) << evicted;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(handler.transport_error_count(), 1);  // Nobody else was evicted.
  int ended = 0;
  for (int fd : half_open) {
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, 0) == 1) ++ended;  // Its end (a reset) is there to read.
    ::close(fd);
  }
  EXPECT_EQ(ended, 1);
}

// The issue's flood: 4,400 idle half-open sockets at the default cap of 4,096, then 50 real
// clients one after another: every handshake completes, each within 1 s.
TEST(TlsServer, AFloodOfIdleHalfOpenSocketsDoesNotLockRealClientsOut) {
  constexpr int kHalfOpen = 4400;
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 2 * kHalfOpen + 300) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 2 * kHalfOpen + 300);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  ASSERT_GE(limit.rlim_cur, 2 * kHalfOpen + 300u) << "the hard fd limit is too low";
  RecordingEcho handler;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()));  // max_handshakes 4096, 10 s.
  std::vector<int> flood;
  for (int i = 0; i < kHalfOpen; ++i) {
    int fd = gev::testing::Connect(tls.address());
    ASSERT_GE(fd, 0) << i;
    flood.push_back(fd);
  }
  // Every one accepted: the cap is full of them (and past it, the latest evicted the oldest).
  ASSERT_TRUE(WaitFor([&] {
    return tls.server->ConnectionCount() + static_cast<size_t>(handler.transport_error_count()) >=
           static_cast<size_t>(kHalfOpen);
  }, 20000));
  // Counted when accepted, the flood's connections may still wait in their loops' queues (each
  // an SSL to make): a first client, not timed, comes after them.
  {
    BlockingTlsClient first(tls.address(), {});
    ASSERT_TRUE(first.Handshake().ok());
  }
  // Not a speed figure: a client locked out waits the whole 10 s handshake timeout. Under a
  // sanitizer on a busy machine a handshake alone can take a good part of a second.
  bool sanitized = std::getenv("TSAN_OPTIONS") != nullptr || std::getenv("ASAN_OPTIONS") != nullptr;
  auto bound = sanitized ? std::chrono::seconds(5) : std::chrono::seconds(1);
  for (int i = 0; i < 50; ++i) {
    auto started = std::chrono::steady_clock::now();
    BlockingTlsClient client(tls.address(), {});
    absl::Status handshake = client.Handshake();
    auto took = std::chrono::steady_clock::now() - started;
    ASSERT_TRUE(handshake.ok()) << "client " << i << ": " << handshake;
    EXPECT_LT(took, bound) << "client " << i << ": "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                           << " ms";
  }
  ASSERT_TRUE(WaitFor([&] { return handler.connects() == 51; })) << handler.connects();
  for (int fd : flood) ::close(fd);
}

TEST(TlsServer, ThousandHalfOpenHandshakesTimeOutWhileOthersAreServed) {
  constexpr int kHalfOpen = 1000;
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 2 * kHalfOpen + 200) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 2 * kHalfOpen + 200);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  ASSERT_GE(limit.rlim_cur, 2 * kHalfOpen + 200u) << "the hard fd limit is too low";
  RecordingEcho handler;
  ServerConfig config = LocalhostConfig();
  // Long enough that the served client's handshake is done before the half-open ones time out:
  // a thousand teardowns at once keep a loop busy for a while under ThreadSanitizer, and the
  // client's own timer runs meanwhile.
  config.handshake_timeout = absl::Seconds(3);
  TlsServer tls(&handler, MustCreate(config));
  std::vector<int> fds;
  std::string hello_start("\x16\x03\x01\x02\x00\x01", 6);  // A ClientHello begun, never ended.
  for (int i = 0; i < kHalfOpen; ++i) {
    int fd = gev::testing::Connect(tls.address());
    ASSERT_GE(fd, 0) << i;
    if (i % 2 == 0) {
      ASSERT_TRUE(WriteAll(fd, hello_start));
    }
    fds.push_back(fd);
  }
  BlockingTlsClient client(tls.address(), {});
  absl::Status handshake = client.Handshake();
  ASSERT_TRUE(handshake.ok()) << handshake;
  std::string payload = Pattern(100000, 3);
  ASSERT_TRUE(client.Write(payload));
  EXPECT_EQ(client.Read(payload.size()), payload);
  ASSERT_TRUE(WaitFor([&] { return handler.transport_error_count() == kHalfOpen; }, 20000))
      << handler.transport_error_count();
  for (int fd : fds) {
    EXPECT_TRUE(gev::testing::SeesEndOfStream(fd));
    ::close(fd);
  }
  ASSERT_TRUE(client.Write("after"));
  EXPECT_EQ(client.Read(5), "after");
  EXPECT_EQ(handler.connects(), 1);
}

TEST(TlsServer, HandshakeTimeoutMustBePositive) {
  ServerConfig config = LocalhostConfig();
  config.handshake_timeout = absl::ZeroDuration();
  EXPECT_EQ(ServerContext::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  ClientConfig client;
  client.handshake_timeout = absl::ZeroDuration();
  EXPECT_EQ(ClientContext::Create(client).status().code(), absl::StatusCode::kInvalidArgument);
}

// A peer that sends and never reads: the echo's output crosses the high-water mark, reading
// pauses, and the server's memory for it stays near the mark, as on plain TCP.
TEST(TlsServer, APeerThatNeverReadsIsHeldAtTheHighWaterMark) {
  RecordingEcho handler;
  // Above what one read echoes (256 KiB), so the mark is crossed by output queued behind
  // output that already waits for the socket.
  constexpr size_t kHighWater = 1024 * 1024;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()), {HighWaterMark(kHighWater)});
  BlockingTlsClient client(tls.address(), {});
  int small = 4096;
  ::setsockopt(client.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  ASSERT_TRUE(client.Handshake().ok());
  timeval short_timeout{0, 200 * 1000};
  ::setsockopt(client.fd(), SOL_SOCKET, SO_SNDTIMEO, &short_timeout, sizeof(short_timeout));
  std::string chunk = Pattern(64 * 1024, 9);
  size_t sent = 0;
  // Writes until the server stops taking them (its reading paused, the socket buffers full).
  while (sent < (64u << 20) && client.Write(chunk)) sent += chunk.size();
  ASSERT_LT(sent, 64u << 20) << "the server never stopped reading";
  ASSERT_TRUE(WaitFor([&] { return handler.high_waters() >= 1; }));
  ConnectionPtr conn = handler.last();
  ASSERT_NE(conn, nullptr);
  // The mark, plus at most one read's worth of plaintext (256 KiB) echoed and its records.
  EXPECT_LE(conn->PendingOutput(), kHighWater + 512 * 1024) << "sent " << sent;
  EXPECT_GT(conn->PendingOutput(), kHighWater);
}

// A client whose Finished, request and close_notify arrive in one segment, at a server that
// pauses reading in OnConnect: the request is delivered on ResumeReading, then the end.
class PausingEcho : public RecordingEcho {
 public:
  void OnConnect(Connection& conn) override {
    RecordingEcho::OnConnect(conn);
    conn.PauseReading();
    conn.loop()->RunAfter(absl::Milliseconds(200), [self = conn.shared_from_this()] {
      self->ResumeReading();
    });
  }
  Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
    {
      std::lock_guard<std::mutex> lock(received_mutex_);
      received_ += buffer.Bytes();
    }
    return RecordingEcho::OnMessage(conn, buffer);
  }
  std::string received() const {
    std::lock_guard<std::mutex> lock(received_mutex_);
    return received_;
  }

 private:
  mutable std::mutex received_mutex_;
  std::string received_;
};

TEST(TlsServer, InputAheadOfCloseNotifyWaitsForResumeReading) {
  PausingEcho handler;
  TlsServer tls(&handler, MustCreate(LocalhostConfig()));
  int fd = gev::testing::Connect(tls.address());
  ASSERT_GE(fd, 0);
  // The client's side through memory BIOs, so that its last flight goes out in one write.
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  BIO* from_server = BIO_new(BIO_s_mem());
  BIO* to_server = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(from_server, -1);  // Empty: wait for more, not the end.
  SSL_set_bio(ssl, from_server, to_server);
  SSL_set_connect_state(ssl);
  SSL_set_tlsext_host_name(ssl, "localhost");
  auto send_pending = [&] {
    char buffer[16384];
    int n;
    while ((n = BIO_read(to_server, buffer, sizeof(buffer))) > 0) {
      if (!WriteAll(fd, std::string_view(buffer, static_cast<size_t>(n)))) return false;
    }
    return true;
  };
  int result;
  while ((result = SSL_do_handshake(ssl)) != 1) {
    ASSERT_EQ(SSL_get_error(ssl, result), SSL_ERROR_WANT_READ);
    ASSERT_TRUE(send_pending());
    char buffer[16384];
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    ASSERT_GT(n, 0);
    BIO_write(from_server, buffer, static_cast<int>(n));
  }
  // Finished is in `to_server` still; the request and close_notify join it.
  size_t written = 0;
  ASSERT_EQ(SSL_write_ex(ssl, "request", 7, &written), 1);
  (void)SSL_shutdown(ssl);  // 0: sent, the server's not yet seen.
  ASSERT_TRUE(send_pending());
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1; }));
  EXPECT_EQ(handler.received(), "request");
  EXPECT_TRUE(handler.close_reason(0).ok()) << handler.close_reason(0);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
}

// gev's own client over TLS.
class ClientHandler : public Handler {
 public:
  explicit ClientHandler(size_t expect) : expect_(expect) {}
  void OnConnect(Connection& conn) override {
    std::lock_guard<std::mutex> lock(mutex_);
    info_ = Info(conn);
    connects_.fetch_add(1);
  }
  Reply OnMessage(Connection&, RingBuffer& buffer) override {
    std::lock_guard<std::mutex> lock(mutex_);
    received_ += buffer.Bytes();
    buffer.RetrieveAll();
    if (received_.size() >= expect_) done_.store(true);
    return Reply();
  }
  bool done() const { return done_.load(); }
  int connects() const { return connects_.load(); }
  std::string received() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return received_;
  }
  ConnectionInfo info() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return info_;
  }

 private:
  const size_t expect_;
  mutable std::mutex mutex_;
  std::string received_;
  ConnectionInfo info_;
  std::atomic<bool> done_{false};
  std::atomic<int> connects_{0};
};

std::shared_ptr<ClientContext> MustCreateClient(ClientConfig config) {
  absl::StatusOr<std::shared_ptr<ClientContext>> context = ClientContext::Create(std::move(config));
  EXPECT_TRUE(context.ok()) << context.status();
  return context.ok() ? *context : nullptr;
}

ClientOptions TlsClientOptions(const InetAddress& address, std::shared_ptr<ClientContext> context,
                               std::string server_name = "localhost") {
  ClientOptions options;
  options.address = address.ToString();
  options.transport = ClientTransport(std::move(context));
  options.server_name = std::move(server_name);
  return options;
}

TEST(TlsClient, EchoesFourMebibytesThroughASmallHighWaterMarkAndResumes) {
  RecordingEcho server_handler;
  ServerConfig server_config = LocalhostConfig();
  server_config.alpn = {"gev-test"};
  TlsServer tls(&server_handler, MustCreate(server_config), {HighWaterMark(64 * 1024)});
  ClientConfig config;
  config.ca_pem = Certs().ca.pem();
  config.alpn = {"gev-test"};
  std::shared_ptr<ClientContext> context = MustCreateClient(config);
  std::string payload = Pattern(4 << 20, 5);
  for (int round = 0; round < 2; ++round) {
    ClientHandler handler(payload.size());
    ClientOptions options = TlsClientOptions(tls.address(), context);
    options.high_water_mark = 64 * 1024;
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(&handler, options);
    ASSERT_TRUE(client.ok()) << client.status();
    (*client)->Connect();
    ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
    // From the test's thread, in pieces.
    ConnectionPtr conn = (*client)->connection();
    for (size_t at = 0; at < payload.size(); at += 256 * 1024) {
      absl::Status sent;
      // Past max_pending_output a send is refused, whole: the sender waits and tries again.
      while ((sent = conn->Send(std::string_view(payload).substr(at, 256 * 1024))).code() ==
             absl::StatusCode::kResourceExhausted) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ASSERT_TRUE(sent.ok()) << sent;
    }
    ASSERT_TRUE(WaitFor([&] { return handler.done(); }, 30000));
    EXPECT_TRUE(handler.received() == payload) << handler.received().size();
    ConnectionInfo info = handler.info();
    EXPECT_EQ(info.version, "TLSv1.3");
    EXPECT_EQ(info.alpn, "gev-test");
    EXPECT_EQ(info.server_name, "localhost");
    EXPECT_EQ(info.session_reused, round == 1) << round;
    (*client)->Stop();
  }
}

// The server ends the first connection with RST (no close_notify either way): the client's
// next connection still resumes, and resumes again after it (each TLS 1.3 ticket used once).
class ResettingEcho : public RecordingEcho {
 public:
  Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
    if (buffer.Bytes() == "reset") {
      buffer.RetrieveAll();
      conn.ForceClose(absl::AbortedError("the test resets"));
      return Reply();
    }
    return RecordingEcho::OnMessage(conn, buffer);
  }
};

TEST(TlsClient, ResumesAfterAConnectionThatEndedBadly) {
  ResettingEcho server_handler;
  TlsServer tls(&server_handler, MustCreate(LocalhostConfig()));
  ClientConfig config;
  config.ca_pem = Certs().ca.pem();
  std::shared_ptr<ClientContext> context = MustCreateClient(config);
  for (int round = 0; round < 3; ++round) {
    ClientHandler handler(2);
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create(&handler, TlsClientOptions(tls.address(), context));
    ASSERT_TRUE(client.ok());
    (*client)->Connect();
    ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
    ConnectionPtr conn = (*client)->connection();
    ASSERT_TRUE(conn->Send("ok").ok());  // Its echo comes after the tickets.
    ASSERT_TRUE(WaitFor([&] { return handler.done(); }));
    EXPECT_EQ(handler.info().session_reused, round > 0) << round;
    ASSERT_TRUE(conn->Send("reset").ok());
    ASSERT_TRUE(WaitFor([&] { return !conn->Connected(); }));
    (*client)->Stop();
  }
}

// Mutual TLS through the configure hook: a server that asks for client certificates signed by
// the test CA serves a gev client that has one (and sees its subject), and refuses one without.
TEST(TlsClient, PresentsAClientCertificateToAServerThatAsksForOne) {
  RecordingEcho server_handler;
  ServerConfig server_config = LocalhostConfig();
  server_config.client_ca_pem = Certs().ca.pem();  // Mutual TLS: clients of this CA only.
  TlsServer tls(&server_handler, MustCreate(server_config));

  ClientConfig with_certificate;
  with_certificate.ca_pem = Certs().ca.pem();
  with_certificate.certificate = Certs().ca.Issue("client one", {"client.test"});
  ClientHandler handler(2);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(
      &handler, TlsClientOptions(tls.address(), MustCreateClient(with_certificate)));
  ASSERT_TRUE(client.ok());
  (*client)->Connect();
  ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
  ASSERT_TRUE((*client)->connection()->Send("mt").ok());
  ASSERT_TRUE(WaitFor([&] { return handler.done(); }));
  EXPECT_EQ(handler.received(), "mt");
  ASSERT_TRUE(WaitFor([&] { return server_handler.connects() == 1; }));
  EXPECT_TRUE(absl::StrContains(server_handler.info(0).peer_subject, "CN=client one"))
      << server_handler.info(0).peer_subject;
  (*client)->Stop();

  // Without one: the server ends the handshake (in TLS 1.3 the client may already count
  // itself connected; the server's alert then ends it).
  BlockingTlsClient bare(tls.address(), {});
  absl::Status handshake = bare.Handshake();
  if (handshake.ok()) {
    (void)bare.Write("x");
    EXPECT_EQ(bare.Read(1), "");
  }
  ASSERT_TRUE(WaitFor([&] { return server_handler.transport_error_count() == 1; }));
  EXPECT_TRUE(absl::StrContains(server_handler.transport_error(0).message(), "certificate"))
      << server_handler.transport_error(0);
  EXPECT_EQ(server_handler.connects(), 1);

  // With a certificate of another CA: refused the same way.
  ClientConfig stranger;
  stranger.ca_pem = Certs().ca.pem();
  stranger.certificate = Certs().other_ca.Issue("stranger", {"x.test"});
  ClientHandler stranger_handler(2);
  absl::StatusOr<std::unique_ptr<Client>> refused = Client::Create(
      &stranger_handler, TlsClientOptions(tls.address(), MustCreateClient(stranger)));
  ASSERT_TRUE(refused.ok());
  (*refused)->Connect();
  ASSERT_TRUE(WaitFor([&] { return server_handler.transport_error_count() == 2; }));
  EXPECT_TRUE(absl::StrContains(server_handler.transport_error(1).message(), "certificate"))
      << server_handler.transport_error(1);
  (*refused)->Stop();
  EXPECT_EQ(server_handler.connects(), 1);
}

TEST(TlsServer, AClientCaThatIsNoCertificateIsRefused) {
  ServerConfig config = LocalhostConfig();
  config.client_ca_pem = "not a certificate";
  absl::Status created = ServerContext::Create(config).status();
  EXPECT_TRUE(absl::IsInvalidArgument(created)) << created;
  config.client_ca_pem.clear();
  config.client_ca_file = "/nonexistent/gev-client-ca.pem";
  created = ServerContext::Create(config).status();
  EXPECT_TRUE(absl::IsInvalidArgument(created)) << created;
}

TEST(TlsClient, ChecksTheServersCertificateAndName) {
  RecordingEcho server_handler;
  TlsServer tls(&server_handler, MustCreate(LocalhostConfig()));
  struct Case {
    std::string ca_pem;
    std::string server_name;
    std::string expected;
  };
  for (const Case& c : {Case{Certs().other_ca.pem(), "localhost", "unable to get local issuer"},
                        Case{Certs().ca.pem(), "wrong.test", "hostname mismatch"}}) {
    ClientConfig config;
    config.ca_pem = c.ca_pem;
    ClientHandler handler(1);
    ClientOptions options = TlsClientOptions(tls.address(), MustCreateClient(config),
                                             c.server_name);
    std::mutex mutex;
    absl::Status error;
    std::atomic<bool> failed{false};
    options.on_connect_error = [&](const absl::Status& status, bool) {
      std::lock_guard<std::mutex> lock(mutex);
      error = status;
      failed.store(true);
    };
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(&handler, options);
    ASSERT_TRUE(client.ok());
    (*client)->Connect();
    ASSERT_TRUE(WaitFor([&] { return failed.load(); }));
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(error.code(), absl::StatusCode::kUnauthenticated) << error;
    EXPECT_TRUE(absl::StrContains(error.message(), "certificate verify failed")) << error;
    EXPECT_TRUE(absl::StrContains(error.message(), c.expected)) << error;
    EXPECT_EQ(handler.connects(), 0);
  }
  // An IP address is checked as one (the certificate carries 127.0.0.1).
  ClientConfig config;
  config.ca_pem = Certs().ca.pem();
  ClientHandler handler(2);
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(&handler, TlsClientOptions(tls.address(), MustCreateClient(config), ""));
  ASSERT_TRUE(client.ok());
  (*client)->Connect();
  ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
  ASSERT_TRUE((*client)->connection()->Send("ip").ok());
  ASSERT_TRUE(WaitFor([&] { return handler.done(); }));
  EXPECT_EQ(handler.received(), "ip");
}

// A TLS 1.2 server of OpenSSL's own for one connection, on a thread: it echoes one message and
// then asks the client to renegotiate (a HelloRequest). It then reads the socket raw, never
// answering what the client sends, until the client ends the connection or 10 s pass.
class RenegotiatingTls12Server {
 public:
  RenegotiatingTls12Server() {
    listener_ = ::gev::testing::ListenOnLoopback(&address_);
    EXPECT_GE(listener_, 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~RenegotiatingTls12Server() {
    thread_.join();
    ::close(listener_);
  }
  const InetAddress& address() const { return address_; }
  bool hello_request_sent() const { return hello_request_sent_.load(); }
  // The client ended the connection (FIN or RST) before the server's patience ran out.
  bool client_ended() const { return client_ended_.load(); }

 private:
  void Serve() {
    int fd = ::gev::testing::AcceptWithin(listener_);
    if (fd < 0) return;
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_RENEGOTIATION);
    const CertificateKeyPair& pair = Certs().localhost;
    BIO* chain = BIO_new_mem_buf(pair.chain_pem.data(), static_cast<int>(pair.chain_pem.size()));
    X509* certificate = PEM_read_bio_X509(chain, nullptr, nullptr, nullptr);
    BIO* key_bio = BIO_new_mem_buf(pair.key_pem.data(), static_cast<int>(pair.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
    EXPECT_EQ(SSL_CTX_use_certificate(ctx, certificate), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx, key), 1);
    X509_free(certificate);
    EVP_PKEY_free(key);
    BIO_free(chain);
    BIO_free(key_bio);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    char message[16];
    size_t got = 0, written = 0;
    if (SSL_accept(ssl) == 1 && SSL_read_ex(ssl, message, sizeof(message), &got) == 1 &&
        SSL_write_ex(ssl, message, got, &written) == 1) {
      // Writes the HelloRequest; OpenSSL then wants the client's new ClientHello, which the
      // raw reads below would see but never answer.
      if (SSL_renegotiate(ssl) == 1) {
        (void)SSL_do_handshake(ssl);
        hello_request_sent_ = true;
      }
      char raw[4096];
      for (;;) {
        ssize_t n = ::recv(fd, raw, sizeof(raw), 0);
        if (n > 0) continue;
        client_ended_ = n == 0 || errno == ECONNRESET;
        break;
      }
    }
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ::close(fd);
  }

  int listener_ = -1;
  InetAddress address_;
  std::thread thread_;
  std::atomic<bool> hello_request_sent_{false};
  std::atomic<bool> client_ended_{false};
};

// A gev client refuses renegotiation as a gev server does: a TLS 1.2 server's HelloRequest
// ends the connection with the reason, rather than a warning the client would then sit on.
TEST(TlsClient, EndsTheConnectionWhenATls12ServerAsksToRenegotiate) {
  RenegotiatingTls12Server server;
  class ClosingHandler : public ClientHandler {
   public:
    ClosingHandler() : ClientHandler(1) {}
    void OnClose(Connection&, const absl::Status& reason) override {
      std::lock_guard<std::mutex> lock(close_mutex_);
      reason_ = reason;
      closed_ = true;
    }
    bool closed() {
      std::lock_guard<std::mutex> lock(close_mutex_);
      return closed_;
    }
    absl::Status reason() {
      std::lock_guard<std::mutex> lock(close_mutex_);
      return reason_;
    }

   private:
    std::mutex close_mutex_;
    bool closed_ = false;
    absl::Status reason_;
  } handler;
  ClientConfig config;
  config.ca_pem = Certs().ca.pem();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(&handler, TlsClientOptions(server.address(), MustCreateClient(config)));
  ASSERT_TRUE(client.ok()) << client.status();
  (*client)->Connect();
  ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
  ASSERT_TRUE((*client)->connection()->Send("x").ok());
  ASSERT_TRUE(WaitFor([&] { return handler.done(); }));  // The echo came before the request.
  EXPECT_EQ(handler.info().version, "TLSv1.2");
  EXPECT_TRUE(WaitFor([&] { return handler.closed(); }))
      << "the client stayed connected after the server's HelloRequest";
  EXPECT_TRUE(absl::StrContains(handler.reason().message(), "renegotiation refused"))
      << handler.reason();
  (*client)->Stop();
  EXPECT_TRUE(WaitFor([&] { return server.client_ended(); }, 10000));
  EXPECT_TRUE(server.hello_request_sent());
}

// A Unix socket has no host to check the certificate against: a verifying client needs
// server_name, and is refused without one rather than accept any name the chain vouches for.
TEST(TlsClient, OverAUnixSocketChecksTheServerNameItIsGivenAndResumes) {
  // Not TEST_TMPDIR: its path can be longer than a socket address holds.
  std::string path = "/tmp/" + ::gev::testing::UniqueName("gev-tls") + ".sock";
  ::unlink(path.c_str());
  RecordingEcho server_handler;
  TlsServer tls(&server_handler, MustCreate(LocalhostConfig()), {Network("unix"), Address(path)});
  ClientConfig config;
  config.ca_pem = Certs().ca.pem();
  std::shared_ptr<ClientContext> context = MustCreateClient(config);
  std::string payload = Pattern(1 << 20, 9);
  for (int round = 0; round < 2; ++round) {
    ClientHandler handler(payload.size());
    ClientOptions options;
    options.network = "unix";
    options.address = path;
    options.transport = ClientTransport(context);
    options.server_name = "localhost";
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(&handler, options);
    ASSERT_TRUE(client.ok()) << client.status();
    (*client)->Connect();
    ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
    ASSERT_TRUE((*client)->connection()->Send(payload).ok());
    ASSERT_TRUE(WaitFor([&] { return handler.done(); }, 30000));
    EXPECT_TRUE(handler.received() == payload) << handler.received().size();
    ConnectionInfo info = handler.info();
    EXPECT_EQ(info.version, "TLSv1.3");
    EXPECT_EQ(info.server_name, "localhost");
    EXPECT_EQ(info.session_reused, round == 1) << round;
    (*client)->Stop();
  }

  // No name: refused when the client is made, not attempt after attempt.
  {
    ClientHandler handler(1);
    ClientOptions options;
    options.network = "unix";
    options.address = path;
    options.transport = ClientTransport(context);
    options.reconnect.enabled = true;
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(&handler, options);
    ASSERT_FALSE(client.ok());
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument) << client.status();
    EXPECT_TRUE(absl::StrContains(client.status().message(), "server_name")) << client.status();
    // Without verification there is nothing to check a name against: that dial is made.
    ClientConfig unverified;
    unverified.verify_peer = false;
    options.transport = ClientTransport(MustCreateClient(unverified));
    options.reconnect.enabled = false;
    client = Client::Create(&handler, options);
    ASSERT_TRUE(client.ok()) << client.status();
    (*client)->Connect();
    ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
    ASSERT_TRUE((*client)->connection()->Send("x").ok());
    ASSERT_TRUE(WaitFor([&] { return handler.done(); }));
    (*client)->Stop();
  }
  // A wrong name fails verification.
  {
    ClientHandler handler(1);
    ClientOptions options;
    options.network = "unix";
    options.address = path;
    options.transport = ClientTransport(context);
    options.server_name = "wrong.test";
    std::mutex mutex;
    absl::Status error;
    std::atomic<bool> failed{false};
    options.on_connect_error = [&](const absl::Status& status, bool) {
      std::lock_guard<std::mutex> lock(mutex);
      error = status;
      failed.store(true);
    };
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(&handler, options);
    ASSERT_TRUE(client.ok()) << client.status();
    (*client)->Connect();
    ASSERT_TRUE(WaitFor([&] { return failed.load(); }));
    (*client)->Stop();
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(error.code(), absl::StatusCode::kUnauthenticated) << error;
    EXPECT_TRUE(absl::StrContains(error.message(), "hostname mismatch")) << error;
    EXPECT_EQ(handler.connects(), 0);
  }
  tls.running.reset();
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace gev::tls
