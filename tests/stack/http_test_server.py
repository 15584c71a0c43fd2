#!/usr/bin/python3
"""A small real HTTP/1.1 server (Python's http.server) for bomarun's HTTP
client tests, on 127.0.0.1.  Prints its port on the first line of stdout.

  GET  /echo                  200, JSON {method, path, headers}
  PUT  /upload, POST /upload  200, JSON {length, sha256} of the request body
  GET  /download?bytes=N      200, N bytes of 'x'
  GET  /flaky?key=K&fail=N    503 for the first N requests with key K, then 200
  GET  /slow?seconds=S        waits S seconds, then 200
  GET  /status?code=C         answers status C with a JSON error body
  GET  /drop                  answers 200 "Connection: keep-alive", then closes
                              the socket silently (as uwsgi --http-socket does)
  GET  /count                 200, JSON {requests: number served so far}
"""
import hashlib, json, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

lock = threading.Lock()
counts = {}
served = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json", close=False):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-OpenStack-Request-Id", "req-test-%d" % served[0])
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if close:
            # Close without saying so: the client believes it can reuse it.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def route(self):
        with lock:
            served[0] += 1
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if u.path == "/echo":
            return self.reply(200, {"method": self.command, "path": self.path,
                                    "headers": dict(self.headers.items())})
        if u.path == "/upload":
            return self.reply(200, {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})
        if u.path == "/download":
            return self.reply(200, b"x" * int(q.get("bytes", "0")), "application/octet-stream")
        if u.path == "/flaky":
            key = q.get("key", "")
            with lock:
                counts[key] = counts.get(key, 0) + 1
                n = counts[key]
            if n <= int(q.get("fail", "0")):
                return self.reply(503, {"message": "try again later (%d)" % n})
            return self.reply(200, {"attempts": n})
        if u.path == "/slow":
            time.sleep(float(q.get("seconds", "1")))
            return self.reply(200, {"slept": q.get("seconds")})
        if u.path == "/status":
            code = int(q.get("code", "500"))
            return self.reply(code, {"itemNotFound": {"message": "Image xyz could not be found.", "code": code}})
        if u.path == "/drop":
            return self.reply(200, {"dropped": True}, close=True)
        if u.path == "/count":
            return self.reply(200, {"requests": served[0]})
        return self.reply(404, {"message": "no such path " + u.path})

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = route


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
