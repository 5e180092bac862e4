// lws_ws: the libwebsockets peer in tools/ws_compare.sh, written the way libwebsockets' own
// minimal examples write a server: one protocol callback; LWS_CALLBACK_RECEIVE gathers a
// message's fragments into the session's buffer; a whole message is queued (with LWS_PRE
// bytes of headroom, as lws_write wants) and lws_callback_on_writable asks for
// LWS_CALLBACK_SERVER_WRITEABLE, which writes one message per callback (lws's rule). On /chat
// every text message is queued, one shared reference-counted copy, on every session on /chat
// (the sender too); elsewhere a message is echoed with its type. rx_buffer_size is 64 KiB, but
// lws reads at most its default pt_serv_buf_size (4 KiB) a call; up to 64 MiB per message; no
// extensions (lws's default).
//
// One service thread (--threads must be 1: lws's multi-thread service is a different program).
//
//   tools/peers/build.sh OUT && OUT/lws_ws --port=0 --threads=1
//
// Prints "listening on 127.0.0.1:PORT" once it listens; runs until killed.

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

enum { kMaxMessage = 64 << 20, kReadSize = 64 * 1024 };

struct message {
  int references;
  int binary;
  size_t length;
  unsigned char bytes[];  // LWS_PRE of headroom, then the payload.
};

struct session {
  struct lws* wsi;
  int chat;
  struct session* next_in_chat;
  struct session* previous_in_chat;
  // Messages to write, a ring.
  struct message** queue;
  size_t queue_head, queue_count, queue_capacity;
  // The message being received.
  unsigned char* received;
  size_t received_length, received_capacity;
  int received_binary;
};

static struct session* chat_sessions;

static void release(struct message* message) {
  if (--message->references == 0) free(message);
}

static int enqueue(struct session* session, struct message* message) {
  if (session->queue_count == session->queue_capacity) {
    size_t capacity = session->queue_capacity ? 2 * session->queue_capacity : 8;
    struct message** queue = malloc(capacity * sizeof *queue);
    if (!queue) return -1;
    for (size_t i = 0; i < session->queue_count; ++i) {
      queue[i] = session->queue[(session->queue_head + i) % session->queue_capacity];
    }
    free(session->queue);
    session->queue = queue;
    session->queue_head = 0;
    session->queue_capacity = capacity;
  }
  session->queue[(session->queue_head + session->queue_count) % session->queue_capacity] = message;
  session->queue_count++;
  message->references++;
  lws_callback_on_writable(session->wsi);
  return 0;
}

static int callback(struct lws* wsi, enum lws_callback_reasons reason, void* user, void* in,
                    size_t len) {
  struct session* session = user;
  switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
      char uri[256];
      memset(session, 0, sizeof *session);
      session->wsi = wsi;
      session->chat = lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0 &&
                      strcmp(uri, "/chat") == 0;
      if (session->chat) {
        session->next_in_chat = chat_sessions;
        if (chat_sessions) chat_sessions->previous_in_chat = session;
        chat_sessions = session;
      }
      break;
    }
    case LWS_CALLBACK_CLOSED:
      if (session->chat) {
        if (session->previous_in_chat) {
          session->previous_in_chat->next_in_chat = session->next_in_chat;
        } else {
          chat_sessions = session->next_in_chat;
        }
        if (session->next_in_chat) session->next_in_chat->previous_in_chat = session->previous_in_chat;
      }
      for (size_t i = 0; i < session->queue_count; ++i) {
        release(session->queue[(session->queue_head + i) % session->queue_capacity]);
      }
      free(session->queue);
      free(session->received);
      break;
    case LWS_CALLBACK_RECEIVE: {
      if (lws_is_first_fragment(wsi)) {
        session->received_length = 0;
        session->received_binary = lws_frame_is_binary(wsi);
      }
      if (session->received_length + len > kMaxMessage) return -1;
      if (session->received_length + len > session->received_capacity) {
        size_t capacity = session->received_capacity ? session->received_capacity : 4096;
        while (capacity < session->received_length + len) capacity *= 2;
        unsigned char* grown = realloc(session->received, capacity);
        if (!grown) return -1;
        session->received = grown;
        session->received_capacity = capacity;
      }
      memcpy(session->received + session->received_length, in, len);
      session->received_length += len;
      if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0) break;
      if (session->chat && session->received_binary) return -1;  // Text only, as gev's chat.
      struct message* message = malloc(sizeof *message + LWS_PRE + session->received_length);
      if (!message) return -1;
      message->references = 1;  // The receiver's, dropped below.
      message->binary = session->received_binary;
      message->length = session->received_length;
      memcpy(message->bytes + LWS_PRE, session->received, session->received_length);
      int failed = 0;
      if (session->chat) {
        for (struct session* s = chat_sessions; s; s = s->next_in_chat) failed |= enqueue(s, message);
      } else {
        failed = enqueue(session, message);
      }
      release(message);
      if (failed) return -1;
      break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
      if (session->queue_count == 0) break;
      struct message* message = session->queue[session->queue_head];
      session->queue_head = (session->queue_head + 1) % session->queue_capacity;
      session->queue_count--;
      int written = lws_write(wsi, message->bytes + LWS_PRE, message->length,
                              message->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
      int short_write = written < (int)message->length;
      release(message);
      if (short_write) return -1;
      if (session->queue_count > 0) lws_callback_on_writable(wsi);
      break;
    }
    default:
      break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"ws", callback, sizeof(struct session), kReadSize, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static int int_flag(int argc, char** argv, const char* name, int fallback) {
  size_t n = strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return atoi(argv[i] + n + 1);
  }
  return fallback;
}

int main(int argc, char** argv) {
  int port = int_flag(argc, argv, "--port", 1837);
  if (int_flag(argc, argv, "--threads", 1) != 1) {
    fprintf(stderr, "lws_ws: one service thread only\n");
    return 2;
  }
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  lws_set_log_level(LLL_ERR, NULL);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = port;
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
  struct lws_context* context = lws_create_context(&info);
  if (!context) {
    fprintf(stderr, "lws_ws: lws_create_context failed\n");
    return 1;
  }
  struct lws_vhost* vhost = lws_get_vhost_by_name(context, "default");
  printf("listening on 127.0.0.1:%d\n", vhost ? lws_get_vhost_listen_port(vhost) : port);
  fflush(stdout);
  while (lws_service(context, 0) >= 0) {
  }
  lws_context_destroy(context);
  return 0;
}
