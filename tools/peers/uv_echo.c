/* uv_echo: the libuv peer in tools/echo_compare.sh. An echo server as a libuv user writes one
 * when speed matters: reads land in one per-loop buffer (handed out by the alloc callback, as
 * Node.js does), uv_try_write sends them straight back, and only what the socket did not take is
 * copied into a uv_write request. A connection whose queued writes pass 1 MiB stops reading until
 * they drain, so memory stays bounded; the peer's FIN waits for the queued writes (uv_shutdown),
 * so no byte is lost. TCP_NODELAY as gev.
 *
 * libuv has no multi-loop listener of its own; --threads=N runs N loops on N threads, each
 * listening on its own SO_REUSEPORT socket handed to libuv with uv_tcp_open, the usual way.
 *
 *   tools/peers/build.sh OUT && OUT/uv_echo --port=0 --threads=1
 *
 * Prints "listening on 127.0.0.1:PORT" once every loop listens; runs until killed. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

enum { kReadBufferSize = 64 * 1024, kMaxQueuedWrite = 1 << 20 };

typedef struct {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_thread_t thread;
  char read_buffer[kReadBufferSize];
} Worker;

typedef struct {
  uv_write_t request;
  uv_buf_t buffer;
  char bytes[];
} WriteRequest;

static void OnClosed(uv_handle_t* handle) { free(handle); }

static void CloseOnce(uv_stream_t* stream) {
  if (!uv_is_closing((uv_handle_t*)stream)) uv_close((uv_handle_t*)stream, OnClosed);
}

static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buffer) {
  (void)suggested;
  Worker* worker = handle->loop->data;
  *buffer = uv_buf_init(worker->read_buffer, kReadBufferSize);
}

static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer);

static void OnWritten(uv_write_t* request, int status) {
  uv_stream_t* stream = request->handle;
  free(request);
  if (status < 0) {
    CloseOnce(stream);
    return;
  }
  /* stream->data marks a connection whose reading was stopped for a full write queue. */
  if (stream->data != NULL && stream->write_queue_size == 0 &&
      !uv_is_closing((uv_handle_t*)stream)) {
    stream->data = NULL;
    uv_read_start(stream, OnAlloc, OnRead);
  }
}

static void OnShutdown(uv_shutdown_t* request, int status) {
  (void)status;
  CloseOnce(request->handle);
  free(request);
}

static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer) {
  if (nread == UV_EOF) {
    /* The peer's FIN: uv_shutdown runs after the queued writes, so every echo byte goes out. */
    uv_read_stop(stream);
    uv_shutdown_t* request = malloc(sizeof(uv_shutdown_t));
    if (uv_shutdown(request, stream, OnShutdown) != 0) {
      free(request);
      CloseOnce(stream);
    }
    return;
  }
  if (nread < 0) {
    CloseOnce(stream);
    return;
  }
  size_t sent = 0;
  if (stream->write_queue_size == 0) {
    uv_buf_t out = uv_buf_init(buffer->base, (unsigned)nread);
    int n = uv_try_write(stream, &out, 1);
    if (n >= 0) {
      sent = (size_t)n;
    } else if (n != UV_EAGAIN) {
      CloseOnce(stream);
      return;
    }
  }
  if (sent == (size_t)nread) return;
  size_t rest = (size_t)nread - sent;
  WriteRequest* request = malloc(sizeof(WriteRequest) + rest);
  memcpy(request->bytes, buffer->base + sent, rest);
  request->buffer = uv_buf_init(request->bytes, (unsigned)rest);
  if (uv_write(&request->request, stream, &request->buffer, 1, OnWritten) != 0) {
    free(request);
    CloseOnce(stream);
    return;
  }
  if (stream->write_queue_size > kMaxQueuedWrite) {
    uv_read_stop(stream);
    stream->data = stream;
  }
}

static void OnConnection(uv_stream_t* listener, int status) {
  if (status < 0) return;
  uv_tcp_t* client = malloc(sizeof(uv_tcp_t));
  uv_tcp_init(listener->loop, client);
  client->data = NULL;
  if (uv_accept(listener, (uv_stream_t*)client) != 0) {
    uv_close((uv_handle_t*)client, OnClosed);
    return;
  }
  uv_tcp_nodelay(client, 1);
  uv_read_start((uv_stream_t*)client, OnAlloc, OnRead);
}

static int ListenSocket(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
  struct sockaddr_in address;
  memset(&address, 0, sizeof(address));
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons((uint16_t)port);
  if (bind(fd, (struct sockaddr*)&address, sizeof(address)) != 0) {
    perror("bind");
    exit(1);
  }
  return fd;
}

static int BoundPort(int fd) {
  struct sockaddr_in address;
  socklen_t length = sizeof(address);
  getsockname(fd, (struct sockaddr*)&address, &length);
  return ntohs(address.sin_port);
}

static void RunWorker(void* argument) { uv_run(&((Worker*)argument)->loop, UV_RUN_DEFAULT); }

static int IntFlag(int argc, char** argv, const char* name, int fallback) {
  size_t length = strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], name, length) == 0 && argv[i][length] == '=') return atoi(argv[i] + length + 1);
  }
  return fallback;
}

int main(int argc, char** argv) {
  int port = IntFlag(argc, argv, "--port", 1834);
  int threads = IntFlag(argc, argv, "--threads", 1);
  if (threads < 1) threads = 1;
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  Worker* workers = calloc((size_t)threads, sizeof(Worker));
  for (int i = 0; i < threads; ++i) {
    Worker* worker = &workers[i];
    uv_loop_init(&worker->loop);
    worker->loop.data = worker;
    int fd = ListenSocket(port);
    port = BoundPort(fd);
    uv_tcp_init(&worker->loop, &worker->listener);
    if (uv_tcp_open(&worker->listener, fd) != 0 ||
        uv_listen((uv_stream_t*)&worker->listener, SOMAXCONN, OnConnection) != 0) {
      fprintf(stderr, "listen failed on port %d\n", port);
      return 1;
    }
  }
  printf("listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
  for (int i = 1; i < threads; ++i) uv_thread_create(&workers[i].thread, RunWorker, &workers[i]);
  RunWorker(&workers[0]);
  return 0;
}
