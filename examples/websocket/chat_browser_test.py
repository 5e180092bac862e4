"""A real browser on the chat: headless Chromium (Debian's chromium) opens the chat page over
http:// and https://, its WebSocket (ws:// and wss://) sends, and the broadcast reaches both the
page and a python3-websockets client in the same room, and what that client says reaches the
page. Chromium is driven through its DevTools protocol, spoken with python3-websockets.

Usage: chat_browser_test.py <chat_server binary>. Chromium missing fails the test (tools/bazel
installs it). Loopback only; every wait is bounded.
"""

import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

import websockets

FAILURES = []


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message, flush=True)


def start_chat(binary, args):
    process = subprocess.Popen([binary, "--port=0", "--loops=2"] + args, stdout=subprocess.PIPE,
                               stderr=tempfile.TemporaryFile())
    line = process.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError("chat_server did not start: %r" % line)
    return process, int(line.rsplit(":", 1)[1])


def stop(process):
    process.terminate()
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    check(code == 0, "a process exited with %r" % code)


def start_chromium(profile):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    process = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--ignore-certificate-errors", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", "--user-data-dir=" + profile, "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stderr.readline().decode(errors="replace")
        if not line:
            break
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return process, found.group(1)
    process.kill()
    raise RuntimeError("chromium printed no DevTools address")


class DevTools:
    """Just enough of the DevTools protocol: open a page, evaluate in it."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError("%s: %s" % (method, reply["error"]))
                return reply["result"]

    async def open(self, url):
        target = await self.call("Target.createTarget", {"url": url})
        attached = await self.call("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        return attached["sessionId"]

    async def evaluate(self, session, expression):
        result = await self.call("Runtime.evaluate",
                                 {"expression": expression, "returnByValue": True}, session)
        return result.get("result", {}).get("value")


PAGE_STATE = ("document.body.dataset.state + '|' + "
              "[...document.querySelectorAll('#log li')].map(e => e.textContent).join('\\n')")


async def wait_for_page(devtools, session, want, seconds=20):
    deadline = time.time() + seconds
    value = None
    while time.time() < deadline:
        value = await devtools.evaluate(session, PAGE_STATE)
        if value and want(value):
            return value
        await asyncio.sleep(0.1)
    return value


async def chat_round(devtools, scheme, port, ssl_context):
    ws_scheme = "wss" if scheme == "https" else "ws"
    said = "hello from chromium over %s" % ws_scheme
    async with websockets.connect("%s://127.0.0.1:%d/chat" % (ws_scheme, port), ssl=ssl_context,
                                  open_timeout=10) as observer:
        session = await devtools.open("%s://127.0.0.1:%d/?say=%s" %
                                      (scheme, port, said.replace(" ", "%20")))
        # The page's message is broadcast to everyone in the room, the page itself too.
        heard = await asyncio.wait_for(observer.recv(), 20)
        check(heard == said, "%s: the observer heard %r" % (ws_scheme, heard))
        value = await wait_for_page(devtools, session, lambda v: said in v)
        check(value is not None and value.startswith("open|") and said in value,
              "%s: the page shows %r" % (ws_scheme, value))
        reply = "and hello from python over %s, caf\u00e9" % ws_scheme
        await observer.send(reply)
        value = await wait_for_page(devtools, session, lambda v: reply in v)
        check(value is not None and reply in value, "%s: the page shows %r" % (ws_scheme, value))
        # The page is served over the same port as its socket.
        location = await devtools.evaluate(session, "location.protocol")
        check(location == scheme + ":", "%s: the page came over %r" % (ws_scheme, location))


async def drive(browser_url, rounds):
    async with websockets.connect(browser_url, max_size=None, open_timeout=20) as ws:
        devtools = DevTools(ws)
        for scheme, port, ssl_context in rounds:
            await chat_round(devtools, scheme, port, ssl_context)


def main():
    binary = sys.argv[1]
    workdir = tempfile.mkdtemp()
    try:
        cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
        made = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            capture_output=True, timeout=30)
        check(made.returncode == 0, "openssl could not make a certificate: %r" % made.stderr)
        plain, plain_port = start_chat(binary, [])
        secure, secure_port = start_chat(binary, ["--tls_cert=" + cert, "--tls_key=" + key])
        browser, browser_url = start_chromium(os.path.join(workdir, "profile"))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        try:
            asyncio.run(drive(browser_url, [("http", plain_port, None),
                                            ("https", secure_port, insecure)]))
        finally:
            browser.kill()
            browser.wait()
            stop(plain)
            stop(secure)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if FAILURES:
        print("%d failure(s)" % len(FAILURES))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
