// asio_echo: the Boost.Asio peer in tools/echo_compare.sh. Asio's own async_tcp_echo_server
// example: each session owns a buffer (64 KiB here, as the other servers read), async_read_some
// into it, async_write all of it back, then read again, so a session never holds more than one
// buffer of unsent bytes. TCP_NODELAY as gev.
//
// --threads=N is Asio's "io_context per thread" pool (its HTTP server 2 example): N io_contexts,
// one thread each; the acceptor runs on the first and hands connections round-robin to all.
//
//   tools/peers/build.sh OUT && OUT/asio_echo --port=0 --threads=1
//
// Prints "listening on 127.0.0.1:PORT" once it listens; runs until killed.

#include <sys/resource.h>

#include <boost/asio.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using boost::asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void Start() {
    boost::system::error_code ignored;  // A socket that cannot take the option still echoes.
    socket_.set_option(tcp::no_delay(true), ignored);
    Read();
  }

 private:
  static constexpr size_t kBufferSize = 64 * 1024;

  void Read() {
    socket_.async_read_some(boost::asio::buffer(buffer_.get(), kBufferSize),
                            [self = shared_from_this()](boost::system::error_code error, size_t n) {
                              if (!error) self->Write(n);
                            });
  }

  void Write(size_t n) {
    boost::asio::async_write(socket_, boost::asio::buffer(buffer_.get(), n),
                             [self = shared_from_this()](boost::system::error_code error, size_t) {
                               if (!error) self->Read();
                             });
  }

  tcp::socket socket_;
  std::unique_ptr<char[]> buffer_{new char[kBufferSize]};
};

class Server {
 public:
  Server(std::vector<std::unique_ptr<boost::asio::io_context>>& contexts, int port)
      : contexts_(contexts),
        acceptor_(*contexts[0], tcp::endpoint(boost::asio::ip::address_v4::loopback(),
                                              static_cast<unsigned short>(port))) {
    Accept();
  }

  int port() const { return acceptor_.local_endpoint().port(); }

 private:
  void Accept() {
    boost::asio::io_context& next = *contexts_[next_++ % contexts_.size()];
    acceptor_.async_accept(next, [this](boost::system::error_code error, tcp::socket socket) {
      if (!error) std::make_shared<Session>(std::move(socket))->Start();
      Accept();
    });
  }

  std::vector<std::unique_ptr<boost::asio::io_context>>& contexts_;
  tcp::acceptor acceptor_;
  size_t next_ = 0;
};

int IntFlag(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i < argc; ++i) {
    std::string argument = argv[i];
    if (argument.rfind(name + "=", 0) == 0) return std::atoi(argument.c_str() + name.size() + 1);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  int port = IntFlag(argc, argv, "--port", 1834);
  int threads = std::max(1, IntFlag(argc, argv, "--threads", 1));
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts;
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards;
  for (int i = 0; i < threads; ++i) {
    contexts.push_back(std::make_unique<boost::asio::io_context>(1));  // One thread runs each.
    guards.push_back(boost::asio::make_work_guard(*contexts.back()));
  }
  Server server(contexts, port);
  std::printf("listening on 127.0.0.1:%d\n", server.port());
  std::fflush(stdout);
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) workers.emplace_back([&context = *contexts[i]] { context.run(); });
  contexts[0]->run();
  for (std::thread& worker : workers) worker.join();
}
