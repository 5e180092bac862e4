// A WebSocket chat: the page at / opens ws://<host>/chat (wss:// when served over TLS), and
// every message anyone sends reaches everyone, on every loop, through Service::Publish.
//
//   tools/bazel run //examples/websocket:chat_server -- --port=8080 --loops=2
//   (then open http://127.0.0.1:8080/ in two browser tabs)
//
// The page sends the `say` query parameter once connected (/?say=hello), which is how a test
// drives it from a headless browser.

#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "examples/websocket/flags.h"
#include "websocket/websocket.h"

namespace {

constexpr char kPage[] = R"html(<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>gev chat</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log { list-style: none; padding: 0; min-height: 10em; border: 1px solid #ccc; }
  #log li { padding: 0.2em 0.5em; }
  form { display: flex; gap: 0.5em; margin-top: 0.5em; }
  input { flex: 1; }
</style>
<body data-state="connecting">
<h1>gev chat</h1>
<ul id="log"></ul>
<form id="form"><input id="text" autocomplete="off" autofocus><button>Send</button></form>
<script>
  const log = document.getElementById("log");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/chat");
  function show(text) {
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
  }
  socket.onopen = () => {
    document.body.dataset.state = "open";
    const say = new URLSearchParams(location.search).get("say");
    if (say) socket.send(say);
  };
  socket.onmessage = (event) => show(event.data);
  socket.onclose = (event) => { document.body.dataset.state = "closed " + event.code; };
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const text = document.getElementById("text");
    if (text.value) socket.send(text.value);
    text.value = "";
  };
</script>
</body>
</html>
)html";

class Chat : public gev::websocket::Handler {
 public:
  void set_service(gev::websocket::Service* service) { service_ = service; }

  void OnUpgrade(gev::websocket::Upgrade& upgrade) override {
    if (upgrade.offer->target != "/chat") {
      upgrade.refusal = gev::websocket::HandshakeError{"404 Not Found", "the chat is at /chat"};
    }
  }
  void OnOpen(gev::websocket::Socket& socket) override { socket.Subscribe("chat"); }
  void OnMessage(gev::websocket::Socket& socket, std::string_view message,
                 gev::websocket::MessageType type) override {
    if (type != gev::websocket::MessageType::kText) {
      // Refused only if a close frame went already.
      (void)socket.Close(gev::websocket::kCloseUnsupportedData, "text only");
      return;
    }
    service_->Publish("chat", message);  // To everyone, the sender too.
  }
  gev::websocket::HttpResponse OnHttpRequest(const gev::http::Request& request) override {
    if (request.target != "/" && request.target.rfind("/?", 0) != 0 &&
        request.target != "/index.html") {
      return Handler::OnHttpRequest(request);
    }
    gev::websocket::HttpResponse page;
    page.status_line = "200 OK";
    page.content_type = "text/html; charset=utf-8";
    page.body = kPage;
    return page;
  }

 private:
  gev::websocket::Service* service_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A WebSocket chat. Usage: chat_server --port=8080");
  absl::ParseCommandLine(argc, argv);
  Chat chat;
  gev::websocket::Options options = gev::examples::WebSocketOptionsFromFlags();
  options.max_message = 64 * 1024;  // A chat line, not a file.
  gev::websocket::Service service(&chat, options);
  chat.set_service(&service);
  return gev::examples::ServeWebSocket(service);
}
