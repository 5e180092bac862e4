// event_echo: the libevent peer in tools/echo_compare.sh. The echo of libevent's own book: an
// evconnlistener hands each connection to a bufferevent, whose read callback moves the input
// buffer into the output buffer (evbuffer_add_buffer, no copy). libevent's defaults stand: in
// 2.1 evbuffer_read takes at most 4 KiB per read(2) (EVBUFFER_MAX_READ; no setting lifts it
// before 2.2) and a bufferevent writes at most 16 KiB per write event. A connection whose
// output passes 1 MiB stops reading until it drains; on the peer's FIN the output is written
// before the connection is freed. TCP_NODELAY as gev.
//
// --threads=N runs N event_bases on N threads, each with its own listener opened with
// LEV_OPT_REUSEABLE_PORT, libevent's way of spreading one port over loops.
//
//   tools/peers/build.sh OUT && OUT/event_echo --port=0 --threads=1
//
// Prints "listening on 127.0.0.1:PORT" once every loop listens; runs until killed.

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kMaxQueuedWrite = 1 << 20;

void OnRead(bufferevent* connection, void*) {
  evbuffer* output = bufferevent_get_output(connection);
  evbuffer_add_buffer(output, bufferevent_get_input(connection));
  if (evbuffer_get_length(output) > kMaxQueuedWrite) bufferevent_disable(connection, EV_READ);
}

// Runs when the output drains to its low-water mark (0): reading resumes if it was stopped.
void OnWritten(bufferevent* connection, void*) { bufferevent_enable(connection, EV_READ); }

void FreeWhenWritten(bufferevent* connection, void*) { bufferevent_free(connection); }

void OnEvent(bufferevent* connection, short events, void*) {
  if (events & BEV_EVENT_ERROR) {
    bufferevent_free(connection);
  } else if (events & BEV_EVENT_EOF) {
    // The peer's FIN: free once the echo of what it sent has gone out.
    if (evbuffer_get_length(bufferevent_get_output(connection)) == 0) {
      bufferevent_free(connection);
      return;
    }
    bufferevent_disable(connection, EV_READ);
    bufferevent_setcb(connection, nullptr, FreeWhenWritten, OnEvent, nullptr);
  }
}

void OnAccept(evconnlistener* listener, evutil_socket_t fd, sockaddr*, int, void*) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  event_base* base = evconnlistener_get_base(listener);
  bufferevent* connection = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(connection, OnRead, OnWritten, OnEvent, nullptr);
  bufferevent_enable(connection, EV_READ | EV_WRITE);
}

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
  std::vector<event_base*> bases;
  for (int i = 0; i < threads; ++i) {
    event_base* base = event_base_new();
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    evconnlistener* listener = evconnlistener_new_bind(
        base, OnAccept, nullptr,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT, -1,
        reinterpret_cast<sockaddr*>(&address), sizeof(address));
    if (listener == nullptr) {
      std::fprintf(stderr, "listen failed on port %d\n", port);
      return 1;
    }
    socklen_t length = sizeof(address);
    getsockname(evconnlistener_get_fd(listener), reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
    bases.push_back(base);
  }
  std::printf("listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) workers.emplace_back([base = bases[i]] { event_base_dispatch(base); });
  event_base_dispatch(bases[0]);
  for (std::thread& worker : workers) worker.join();
}
