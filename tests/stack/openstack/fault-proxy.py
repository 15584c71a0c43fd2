#!/usr/bin/python3
"""fault-proxy.py: a loopback HTTP reverse proxy that injects faults.

Sits in front of one service of the test stack (say Glance on 9292) and
forwards every request verbatim to it, unless told to misbehave.  Python 3
standard library only.  Loopback only: it listens on and forwards to
127.0.0.0/8 (or ::1) and refuses anything else.

RUN
    fault-proxy.py --target http://127.0.0.1:9292 [--listen 127.0.0.1:0]
                   [--port-file FILE] [--control-file FILE]
                   [--initial MODE[:COUNT[:ARG]]] [--quiet]

    --listen        address to listen on; port 0 (the default) picks a free one
    --port-file     write the port actually listened on to FILE (then a test
                    can start the proxy in the background and read it)
    --control-file  a JSON file re-read whenever it changes (see below)
    --initial       the mode to start in, e.g. "503:3" = the first 3 requests
                    get 503, then pass-through

    It prints "fault-proxy: listening on http://127.0.0.1:PORT -> TARGET" on
    stdout once it accepts connections.  Stop it with SIGTERM or SIGINT.

MODES (one at a time; a mode with a count reverts to "pass" when used up)
    pass                    forward everything (the default)
    503      COUNT          answer the next COUNT requests with 503 Service
                            Unavailable (JSON body; "Retry-After: N" when
                            retry_after=N is given); not forwarded
    status   COUNT CODE     the same with any status CODE (500, 502, 429...)
    reset    COUNT          read the next COUNT requests, then reset the
                            connection (TCP RST, no response); not forwarded
    drop     COUNT          read the next COUNT requests, then close the
                            connection cleanly without a response
    delay    SECONDS [COUNT] forward after sleeping SECONDS (for the next
                            COUNT requests, or for all until the mode changes)
    Requests to the control path are never counted or faulted.

CONTROL OVER HTTP (on the proxy's own port, path prefix /_fault)
    GET  /_fault                      -> current state and counters (JSON)
    POST /_fault/pass
    POST /_fault/503?count=N[&retry_after=S]
    POST /_fault/status?count=N&code=C
    POST /_fault/reset?count=N
    POST /_fault/drop?count=N
    POST /_fault/delay?seconds=S[&count=N]
    POST /_fault/counters/clear       -> zero the counters
    Each POST answers 200 with the new state.  The state JSON:
      {"mode": "503", "remaining": 2, "seconds": 0, "code": 503,
       "retry_after": null, "target": "http://127.0.0.1:9292",
       "counters": {"requests": 7, "forwarded": 4, "faulted": 3,
                    "upstream_errors": 0}}
    ("requests" counts every proxied request, faulted or not.)

CONTROL FILE (--control-file)
    JSON with the same keys as the query parameters plus "mode", e.g.
      {"mode": "503", "count": 3}
      {"mode": "delay", "seconds": 2.5}
      {"mode": "pass"}
    It is applied each time its modification time changes (checked on every
    request); removing it changes nothing.

FORWARDING
    Method, path, query, headers and body go upstream unchanged (the Host
    header included, so links the service builds from it point at the proxy),
    except hop-by-hop headers.  The response's status, reason, headers and
    body come back unchanged (streamed), with "Connection: close": one
    request per client connection, no keep-alive on the client side.  An
    upstream that cannot be reached gives 502.
"""
import argparse
import http.client
import http.server
import ipaddress
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-authenticate",
              "proxy-authorization"}
CONTROL = "/_fault"


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class State:
    """The current fault mode and the counters, shared by all threads."""

    def __init__(self, target):
        self.lock = threading.Lock()
        self.target = target
        self.mode = "pass"
        self.remaining = None      # None: until told otherwise
        self.seconds = 0.0
        self.code = 503
        self.retry_after = None
        self.counters = dict(requests=0, forwarded=0, faulted=0, upstream_errors=0)

    def set(self, mode, count=None, seconds=None, code=None, retry_after=None):
        mode = str(mode)
        if mode not in ("pass", "503", "status", "reset", "drop", "delay"):
            raise ValueError("unknown mode %r" % mode)
        count = None if count in (None, "") else int(count)
        if mode in ("503", "status", "reset", "drop") and count is None:
            count = 1
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        with self.lock:
            self.mode = mode
            self.remaining = count
            self.seconds = float(seconds) if seconds not in (None, "") else 0.0
            self.code = int(code) if code not in (None, "") else 503
            if mode == "503":
                self.code = 503
            self.retry_after = retry_after if retry_after not in (None, "") else None
            if mode == "pass" or count == 0:
                self.mode, self.remaining = "pass", None

    def take(self):
        """Count one proxied request; return the fault to apply to it."""
        with self.lock:
            self.counters["requests"] += 1
            mode = self.mode
            fault = dict(mode=mode, seconds=self.seconds, code=self.code,
                         retry_after=self.retry_after)
            if mode != "pass" and self.remaining is not None:
                self.remaining -= 1
                if self.remaining <= 0:
                    self.mode, self.remaining = "pass", None
            if mode in ("503", "status", "reset", "drop"):
                self.counters["faulted"] += 1
            return fault

    def bump(self, key):
        with self.lock:
            self.counters[key] += 1

    def snapshot(self):
        with self.lock:
            return dict(mode=self.mode, remaining=self.remaining,
                        seconds=self.seconds, code=self.code,
                        retry_after=self.retry_after, target=self.target,
                        counters=dict(self.counters))


class ControlFile:
    def __init__(self, path, state):
        self.path, self.state, self.mtime = path, state, None
        self.lock = threading.Lock()

    def poll(self):
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return
        with self.lock:
            if mtime == self.mtime:
                return
            self.mtime = mtime
            try:
                with open(self.path) as f:
                    spec = json.load(f)
                self.state.set(spec.get("mode", "pass"), spec.get("count"),
                               spec.get("seconds"), spec.get("code"),
                               spec.get("retry_after"))
                log("control file: %s" % json.dumps(spec))
            except (OSError, ValueError, TypeError) as e:
                log("control file %s ignored: %s" % (self.path, e))


QUIET = False


def log(msg):
    if not QUIET:
        sys.stderr.write("fault-proxy: %s\n" % msg)
        sys.stderr.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bomarun-fault-proxy"

    # Every method goes through the same path.
    def do_GET(self): self.handle_any()
    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    # --- request body -------------------------------------------------------
    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else None

    def send_json(self, code, obj, extra=None):
        body = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    # --- control ------------------------------------------------------------
    def control(self, body):
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        what = url.path[len(CONTROL):].strip("/")
        if self.command == "GET" and what == "":
            return self.send_json(200, state.snapshot())
        if self.command != "POST":
            return self.send_json(405, {"error": "use GET %s or POST %s/MODE" % (CONTROL, CONTROL)})
        try:
            if what == "counters/clear":
                with state.lock:
                    for k in state.counters:
                        state.counters[k] = 0
            else:
                state.set(what, q.get("count"), q.get("seconds"), q.get("code"),
                          q.get("retry_after"))
        except (ValueError, TypeError) as e:
            return self.send_json(400, {"error": str(e)})
        log("control: %s %s" % (what, q))
        return self.send_json(200, state.snapshot())

    # --- proxying -----------------------------------------------------------
    def handle_any(self):
        self.close_connection = True
        body = self.read_body()
        if self.path == CONTROL or self.path.startswith(CONTROL + "/") or self.path.startswith(CONTROL + "?"):
            return self.control(body)
        self.server.control_file.poll()
        fault = self.server.state.take()
        mode = fault["mode"]
        if mode in ("503", "status"):
            extra = {}
            if fault["retry_after"] is not None:
                extra["Retry-After"] = str(fault["retry_after"])
            return self.send_json(fault["code"], {"error": {
                "code": fault["code"], "title": http.client.responses.get(fault["code"], "Error"),
                "message": "injected by bomarun fault-proxy"}}, extra)
        if mode == "reset":
            # SO_LINGER {on, 0}: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if mode == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "delay" and fault["seconds"] > 0:
            time.sleep(fault["seconds"])
        self.forward(body)

    def forward(self, body):
        t = self.server.target
        conn = http.client.HTTPConnection(t.hostname, t.port or 80, timeout=self.server.upstream_timeout)
        headers = {}
        for k, v in self.headers.items():
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            headers[k] = v
        if body is not None:
            headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        path = (t.path.rstrip("/") + self.path) if t.path not in ("", "/") else self.path
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
        except OSError as e:
            self.server.state.bump("upstream_errors")
            conn.close()
            return self.send_json(502, {"error": {"code": 502, "title": "Bad Gateway",
                                                  "message": "fault-proxy: upstream %s: %s" % (self.server.target_url, e)}})
        self.server.state.bump("forwarded")
        try:
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in HOP_BY_HOP:
                    continue
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while True:
                    chunk = resp.read(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
            self.wfile.flush()
        except OSError:
            pass  # the client went away
        finally:
            conn.close()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global QUIET
    ap = argparse.ArgumentParser(description="loopback fault-injecting HTTP proxy (see the file's docstring)")
    ap.add_argument("--target", required=True, help="upstream base URL, e.g. http://127.0.0.1:9292")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (default 127.0.0.1:0)")
    ap.add_argument("--port-file", help="write the listening port here")
    ap.add_argument("--control-file", help="JSON control file, re-read on change")
    ap.add_argument("--initial", default="pass", help="MODE[:COUNT[:ARG]], e.g. 503:3, delay:2:5")
    ap.add_argument("--upstream-timeout", type=float, default=120.0)
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    a = ap.parse_args()
    QUIET = a.quiet

    target = urllib.parse.urlsplit(a.target)
    if target.scheme != "http" or not target.hostname or not is_loopback(target.hostname):
        ap.error("--target must be an http:// URL on a loopback address")
    host, _, port = a.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not is_loopback(host):
        ap.error("--listen must be a loopback address")

    state = State(a.target)
    parts = a.initial.split(":")
    mode = parts[0]
    if mode == "delay":
        state.set("delay", parts[2] if len(parts) > 2 else None, parts[1] if len(parts) > 1 else 0)
    elif mode == "status":
        state.set("status", parts[1] if len(parts) > 1 else 1, code=parts[2] if len(parts) > 2 else 503)
    else:
        state.set(mode, parts[1] if len(parts) > 1 else None)

    if ":" in host:
        Server.address_family = socket.AF_INET6
    srv = Server((host, int(port or 0)), Handler)
    srv.state = state
    srv.target = target
    srv.target_url = a.target
    srv.upstream_timeout = a.upstream_timeout
    srv.control_file = ControlFile(a.control_file, state)
    srv.control_file.poll()
    real_port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % real_port)
        os.replace(tmp, a.port_file)
    print("fault-proxy: listening on http://%s:%d -> %s (mode %s)"
          % (host, real_port, a.target, state.snapshot()["mode"]), flush=True)

    import signal
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    srv.server_close()


if __name__ == "__main__":
    main()
