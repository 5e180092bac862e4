#!/usr/bin/env python3
"""Restarts under load: examples/echo and examples/http restarted again and again while clients
connect and send without a pause, to show that a handoff restart refuses, resets and loses
nothing, and what a plain stop-and-start costs instead.

  tools/restart_test.py --echo_server=bazel-bin/examples/echo/echo_server \
      --http_server=bazel-bin/examples/http/http_server --churn_load=bazel-bin/tools/churn_load \
      [--restarts=10] [--interval=0.5] [--method=handoff|stop-start] [--runs=echo:acceptor,...]

Each run starts a server (2 loops; one acceptor or an SO_REUSEPORT listener per loop), puts a
load on it (tools/churn_load for echo: short connections, every byte checked; wrk for HTTP),
and restarts it --restarts times, --interval apart:
  handoff     SIGHUP: the server starts itself again, the new process takes the listeners over
              --handoff's socket, the old one drains and exits.
  stop-start  SIGTERM, wait for the exit, start the binary again on the same port.
It prints one line per run. With --method=handoff (the test) it fails unless: the load saw no
failed connect, reset, truncated or wrong response, or timeout; every old process exited with
status 0 within StopTimeout (5 s) and a second; and the last server's descriptors are back to
what the first had before the load.

Runs inside a network namespace of its own (it re-executes itself under `unshare -n`, as root),
so the fixed port of the socket-activation check (--systemd) and the stop-start restarts' port
are private. --systemd checks systemd-socket-activate end to end instead: the server started
with the socket it passes, serving a client waiting since before it ran, then restarted.
"""

import argparse
import ctypes
import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

STOP_TIMEOUT_S = 5.0
PR_SET_CHILD_SUBREAPER = 36


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def enter_private_network():
    """Re-executes this script in a network namespace of its own, loopback up."""
    if os.environ.get("GEV_RESTART_TEST_NETNS") == "1":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, 0x8913, request)[:18])[1]  # SIOCGIFFLAGS
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
        sock.close()
        return
    if os.geteuid() != 0:
        fail("needs root, for a network namespace of its own (unshare -n)")
    env = dict(os.environ, GEV_RESTART_TEST_NETNS="1")
    result = subprocess.run(["unshare", "-n", sys.executable] + sys.argv, env=env)
    sys.exit(result.returncode)


def become_subreaper():
    """Restarted servers are the first one's descendants: this process reaps them all."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        fail("prctl(PR_SET_CHILD_SUBREAPER) failed")


def wait_exit(pid, timeout):
    """Waits for descendant `pid` to end; returns (exit status or None on timeout, seconds)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            ended, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return (None, time.monotonic() - start)
        if ended == pid:
            return (os.waitstatus_to_exitcode(status), time.monotonic() - start)
        time.sleep(0.01)
    return (None, time.monotonic() - start)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def restart_with_sighup(pid, pid_file, timeout, what):
    """SIGHUPs `pid` until the pid file names another process, which it returns. A server
    ignores (and logs) a SIGHUP until its handoff path is served, and the path's socket file
    appears at bind, a moment before that: a first signal may come too early, so it is sent
    again each second."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        os.kill(pid, signal.SIGHUP)
        step = time.monotonic()
        while time.monotonic() - step < 1.0:
            new_pid = read_pid(pid_file)
            if new_pid not in (0, pid):
                return new_pid
            time.sleep(0.01)
    fail("timed out waiting for " + what)


def wait_for(condition, timeout, what):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    fail("timed out waiting for " + what)


def descriptor_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settled_descriptor_count(pid, timeout=5):
    """The count once it holds still (three reads 50 ms apart agree): a server that has just
    started may still hold a descriptor of its start-up for a moment (seen under ASan)."""
    counts = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = (counts + [descriptor_count(pid)])[-3:]
        if len(counts) == 3 and len(set(counts)) == 1:
            return counts[0]
        time.sleep(0.05)
    return min(counts)


def read_listening_port(process, timeout=10):
    """The port of the first "listening on" line the server prints."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"listening on .*:(\d+)$", line.strip())
        if match:
            return int(match.group(1))
    fail("the server printed no \"listening on\" line")


class Run:
    def __init__(self, args, kind, mode, workdir, port):
        self.args = args
        self.port = port
        self.kind = kind
        self.mode = mode
        self.workdir = workdir
        self.binary = args.echo_server if kind == "echo" else args.http_server
        self.pid_file = os.path.join(workdir, "%s-%s.pid" % (kind, mode))
        self.handoff = os.path.join(workdir, "%s-%s.handoff" % (kind, mode))
        self.stderr = open(os.path.join(workdir, "%s-%s.log" % (kind, mode)), "w")

    def command(self, port):
        command = [self.binary, "--port=%d" % port, "--loops=2", "--pid_file=" + self.pid_file]
        if self.mode == "reuseport":
            command.append("--reuseport")
        if self.args.method == "handoff":
            command.append("--handoff=" + self.handoff)
        return command

    def start_server(self, port):
        process = subprocess.Popen(self.command(port), stdout=subprocess.PIPE, stderr=self.stderr,
                                   text=True)
        return process, read_listening_port(process)

    def start_load(self, port, seconds):
        if self.kind == "echo":
            return subprocess.Popen(
                [self.args.churn_load, "--address=127.0.0.1:%d" % port, "--connections=8",
                 "--duration=%ds" % seconds], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
        return subprocess.Popen(
            ["wrk", "-t2", "-c32", "-d%ds" % seconds, "--latency",
             "http://127.0.0.1:%d/plaintext" % port], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    def load_result(self, load):
        out, err = load.communicate(timeout=120)
        if self.kind == "echo":
            fields = dict(re.findall(r"(\w+)=([\d.]+)", out))
            if "connections" not in fields:
                fail("churn_load said: " + out + err)
            failures = sum(int(fields[k]) for k in
                           ("failed_connects", "resets", "truncated", "mismatched", "timeouts"))
            summary = ("connections=%s failed_connects=%s resets=%s truncated=%s mismatched=%s "
                       "timeouts=%s longest_gap_ms=%s longest_connect_ms=%s" % (
                           fields["connections"], fields["failed_connects"], fields["resets"],
                           fields["truncated"], fields["mismatched"], fields["timeouts"],
                           fields["longest_gap_ms"], fields["longest_connect_ms"]))
            return failures, summary, out + err
        requests = re.search(r"(\d+) requests in", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                           out)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        latency_max = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
        if not requests:
            fail("wrk said: " + out + err)
        connect, read, write, timeout = (int(x) for x in errors.groups()) if errors else (0,) * 4
        bad = int(non_2xx.group(1)) if non_2xx else 0
        summary = ("requests=%s failed_connects=%d read_errors=%d write_errors=%d timeouts=%d "
                   "non_2xx=%d latency_max=%s" % (requests.group(1), connect, read, write,
                                                  timeout, bad,
                                                  latency_max.group(1) if latency_max else "?"))
        return connect + read + write + timeout + bad, summary, out

    def execute(self):
        handoff = self.args.method == "handoff"
        restarts = self.args.restarts
        # The load runs until the last restart is over (then SIGINT: both report and exit),
        # however long the restarts take on a busy machine; this is only its upper bound.
        seconds = int(restarts * (self.args.interval + STOP_TIMEOUT_S + 12) + 30)
        # A fixed port, private to this network namespace, below the ephemeral range: a client
        # connecting to an ephemeral port nobody listens on can be given that very port as its
        # own and connect to itself.
        first, port = self.start_server(self.port)
        if handoff:
            wait_for(lambda: os.path.exists(self.handoff), 10, "the handoff socket")
        pid = wait_for(lambda: read_pid(self.pid_file), 10, "the pid file")
        baseline = settled_descriptor_count(pid)
        load = self.start_load(port, seconds)
        time.sleep(1.0)
        problems = []
        drain_longest = 0.0
        # Kept referenced: the first server's stdout pipe is every restarted server's too, and
        # dropping the Popen object would close its reading end.
        process = first
        for i in range(restarts):
            if handoff:
                new_pid = restart_with_sighup(pid, self.pid_file, 10,
                                              "restart %d's new pid" % (i + 1))
                status, took = wait_exit(pid, STOP_TIMEOUT_S + 1)
                drain_longest = max(drain_longest, took)
                if status != 0:
                    problems.append("pid %d (restart %d) ended with %s after %.1f s" % (
                        pid, i + 1, status, took))
                pid = new_pid
            else:
                os.kill(pid, signal.SIGTERM)
                status, took = wait_exit(pid, STOP_TIMEOUT_S + 1)
                process, _ = self.start_server(port)
                pid = wait_for(lambda: (lambda p: p if p not in (0, pid) else 0)(
                    read_pid(self.pid_file)), 10, "the new pid")
            time.sleep(self.args.interval)
        time.sleep(0.5)  # The last server under load too.
        load.send_signal(signal.SIGINT)
        failures, summary, details = self.load_result(load)
        # The load is over: its connections close, and the server's descriptors come back.
        deadline = time.monotonic() + 5
        while descriptor_count(pid) != baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        final = descriptor_count(pid)
        os.kill(pid, signal.SIGTERM)
        status, _ = wait_exit(pid, STOP_TIMEOUT_S + 5)
        if status != 0:
            problems.append("the last server (pid %d) ended with %s" % (pid, status))
        if handoff and final != baseline:
            problems.append("the last server has %d descriptors, the first had %d" % (
                final, baseline))
        if handoff and failures:
            problems.append("the load saw %d failures" % failures)
        print("%s %s %s: restarts=%d %s longest_drain_s=%.2f descriptors=%d/%d" % (
            self.kind, self.mode, self.args.method, restarts, summary, drain_longest, final,
            baseline), flush=True)
        if problems:
            print(details)
            print(open(self.stderr.name).read()[-3000:])
        return problems


def check_socket_activation(args, workdir, kind, port):
    """systemd-socket-activate passes a TCP listener on a fixed port (private network): the echo
    or HTTP server serves it, a client that connected before the server ran included; then a
    SIGHUP restart hands it on."""
    pid_file = os.path.join(workdir, "activated-%s.pid" % kind)
    handoff = os.path.join(workdir, "activated-%s.handoff" % kind)
    log = os.path.join(workdir, "activated-%s.log" % kind)
    binary = args.echo_server if kind == "echo" else args.http_server
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", "127.0.0.1:%d" % port, "--fdname=" + kind, "--",
         binary, "--port=1", "--loops=2", "--pid_file=" + pid_file, "--handoff=" + handoff],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)

    def fail(message):  # With what the servers logged.
        print(open(log).read()[-3000:])
        globals()["fail"](message)

    # systemd-socket-activate starts the program once the first client connects.
    client = None
    deadline = time.monotonic() + 10
    while client is None and time.monotonic() < deadline:
        try:
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            time.sleep(0.05)
    if client is None:
        fail("systemd-socket-activate did not listen on %d" % port)
    line = activator.stdout.readline().strip()
    if line != "listening on 127.0.0.1:%d" % port:
        fail("the activated server said %r, not that it listens on the passed socket" % line)

    def echo(sock, message):
        """One exchange: the echo, or a GET answered "Hello, World!" (for HTTP)."""
        if kind == "http":
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: test\r\n\r\n")
            got = b""
            while not got.endswith(b"Hello, World!"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"Hello, World!")
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got == message

    if not echo(client, b"before the server ran"):
        fail("the first client, waiting since before the server ran, got no echo")
    first_pid = wait_for(lambda: read_pid(pid_file), 10, "the pid file")
    # A SIGHUP before the server serves its handoff path is ignored (the child would find
    # nobody to take over from).
    wait_for(lambda: os.path.exists(handoff), 10, "the handoff socket")
    if first_pid != activator.pid:
        fail("the server is pid %d, not the one systemd-socket-activate became" % first_pid)
    new_pid = restart_with_sighup(first_pid, pid_file, 10, "the restarted server")
    # The old server drains: its one connection goes on until the client closes it.
    if not echo(client, b"during the drain"):
        fail("the open connection was not served while the old server drained")
    client.close()
    status, _ = wait_exit(first_pid, STOP_TIMEOUT_S + 1)
    if status != 0:
        fail("the activated server ended with %s after the restart" % status)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
        if not echo(again, b"after the restart"):
            fail("the restarted server did not echo")
    os.kill(new_pid, signal.SIGTERM)
    status, _ = wait_exit(new_pid, STOP_TIMEOUT_S + 5)
    if status != 0:
        fail("the restarted server ended with %s" % status)
    print("ok: %s: systemd-socket-activate passed 127.0.0.1:%d; served, restarted, served" % (
        kind, port), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--echo_server", required=True)
    parser.add_argument("--http_server", required=True)
    parser.add_argument("--churn_load", required=True)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--method", choices=["handoff", "stop-start"], default="handoff")
    parser.add_argument("--runs", default="echo:acceptor,echo:reuseport,http:acceptor,"
                        "http:reuseport")
    parser.add_argument("--systemd", action="store_true",
                        help="check socket activation through systemd-socket-activate instead")
    args = parser.parse_args()
    for tool in (["systemd-socket-activate"] if args.systemd else ["wrk"]):
        if subprocess.run(["sh", "-c", "command -v " + tool], stdout=subprocess.DEVNULL).returncode:
            fail(tool + " is missing (tools/bazel installs it)")
    for path in (args.echo_server, args.http_server, args.churn_load):
        args_path = os.path.abspath(path)
        if not os.access(args_path, os.X_OK):
            fail(path + " is not an executable")
    args.echo_server = os.path.abspath(args.echo_server)
    args.http_server = os.path.abspath(args.http_server)
    args.churn_load = os.path.abspath(args.churn_load)
    enter_private_network()
    become_subreaper()
    workdir = tempfile.mkdtemp(prefix="gev-restart-")
    if args.systemd:
        check_socket_activation(args, workdir, "echo", 8080)
        check_socket_activation(args, workdir, "http", 8081)
        return
    problems = []
    for index, run in enumerate(args.runs.split(",")):
        kind, mode = run.split(":")
        problems += Run(args, kind, mode, workdir, 9000 + index).execute()
    for problem in problems:
        print("FAIL: " + problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
