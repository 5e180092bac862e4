// beast_ws: the Boost.Beast peer in tools/ws_compare.sh. A WebSocket server written the way
// Beast's own examples write one: a session per connection reads the HTTP request, accepts
// the upgrade with it, then async_read a whole message into its flat_buffer. On /chat every
// text message goes to every session on /chat (the sender too), as Beast's chat example
// does it: one shared string per message, queued per session and written one async_write at
// a time; elsewhere a message is echoed with its type. Messages go out unfragmented
// (auto_fragment off), up to 64 MiB in; TCP_NODELAY as gev. No permessage-deflate (Beast's
// default).
//
// --threads=N: N io_contexts, one thread each, connections handed out round-robin (as the
// Asio peer); a message for a session on another thread is posted to its io_context.
//
//   tools/peers/build.sh OUT && OUT/beast_ws --port=0 --threads=1
//
// Prints "listening on 127.0.0.1:PORT" once it listens; runs until killed.

#include <sys/resource.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using boost::asio::ip::tcp;

class Session;

// The sessions on /chat, across threads.
class Room {
 public:
  void Join(const std::shared_ptr<Session>& session) {
    std::lock_guard<std::mutex> lock(mutex_);
    sessions_.insert(session);
  }
  void Leave(const std::shared_ptr<Session>& session) {
    std::lock_guard<std::mutex> lock(mutex_);
    sessions_.erase(session);
  }
  void Send(const std::shared_ptr<const std::string>& message);

 private:
  std::mutex mutex_;
  std::unordered_set<std::shared_ptr<Session>> sessions_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Room& room, boost::asio::io_context& context)
      : ws_(std::move(socket)), room_(room), context_(context) {}

  boost::asio::io_context& context() { return context_; }

  void Start() {
    boost::system::error_code ignored;  // A socket that cannot take the option still works.
    ws_.next_layer().set_option(tcp::no_delay(true), ignored);
    http::async_read(ws_.next_layer(), buffer_, request_,
                     [self = shared_from_this()](beast::error_code error, size_t) {
                       if (!error) self->Accept();
                     });
  }

  // On this session's thread.
  void Deliver(const std::shared_ptr<const std::string>& message) {
    queue_.push_back(message);
    if (queue_.size() == 1) WriteFront();
  }

 private:
  void Accept() {
    chat_ = request_.target() == "/chat";
    ws_.auto_fragment(false);
    ws_.read_message_max(64 << 20);
    ws_.async_accept(request_, [self = shared_from_this()](beast::error_code error) {
      if (error) return;
      if (self->chat_) self->room_.Join(self);
      self->Read();
    });
  }

  void Read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code error, size_t) {
      self->OnRead(error);
    });
  }

  void OnRead(beast::error_code error) {
    if (error) {
      if (chat_) room_.Leave(shared_from_this());
      return;
    }
    if (chat_) {
      auto message = std::make_shared<const std::string>(beast::buffers_to_string(buffer_.data()));
      buffer_.consume(buffer_.size());
      room_.Send(message);
      Read();
      return;
    }
    ws_.text(ws_.got_text());
    ws_.async_write(buffer_.data(), [self = shared_from_this()](beast::error_code error, size_t n) {
      if (error) return;
      self->buffer_.consume(n);
      self->Read();
    });
  }

  void WriteFront() {
    ws_.text(true);
    ws_.async_write(boost::asio::buffer(*queue_.front()),
                    [self = shared_from_this()](beast::error_code error, size_t) {
                      if (error) return;
                      self->queue_.pop_front();
                      if (!self->queue_.empty()) self->WriteFront();
                    });
  }

  websocket::stream<tcp::socket> ws_;
  Room& room_;
  boost::asio::io_context& context_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  bool chat_ = false;
  std::deque<std::shared_ptr<const std::string>> queue_;
};

thread_local boost::asio::io_context* current_context = nullptr;

void Room::Send(const std::shared_ptr<const std::string>& message) {
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    sessions.assign(sessions_.begin(), sessions_.end());
  }
  for (const std::shared_ptr<Session>& session : sessions) {
    if (&session->context() == current_context) {
      session->Deliver(message);
    } else {
      boost::asio::post(session->context(), [session, message] { session->Deliver(message); });
    }
  }
}

class Server {
 public:
  Server(std::vector<std::unique_ptr<boost::asio::io_context>>& contexts, int port)
      : contexts_(contexts),
        acceptor_(*contexts[0], tcp::endpoint(boost::asio::ip::address_v4::loopback(),
                                              static_cast<unsigned short>(port))) {
    acceptor_.listen(4096);
    Accept();
  }

  int port() const { return acceptor_.local_endpoint().port(); }

 private:
  void Accept() {
    boost::asio::io_context& next = *contexts_[next_++ % contexts_.size()];
    acceptor_.async_accept(next, [this, &next](boost::system::error_code error, tcp::socket socket) {
      if (!error) std::make_shared<Session>(std::move(socket), room_, next)->Start();
      Accept();
    });
  }

  std::vector<std::unique_ptr<boost::asio::io_context>>& contexts_;
  tcp::acceptor acceptor_;
  Room room_;
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
  int port = IntFlag(argc, argv, "--port", 1835);
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
  auto run = [](boost::asio::io_context& context) {
    current_context = &context;
    context.run();
  };
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) workers.emplace_back(run, std::ref(*contexts[i]));
  run(*contexts[0]);
  for (std::thread& worker : workers) worker.join();
}
