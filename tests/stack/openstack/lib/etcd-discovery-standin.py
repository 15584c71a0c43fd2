#!/usr/bin/python3
"""A loopback stand-in for etcd's public discovery service (discovery.etcd.io).

magnum-conductor asks `[cluster] etcd_discovery_service_endpoint_format`
(GET /new?size=N) for a discovery URL when it creates a cluster; the real
service is on the internet.  This answers with a URL on itself, and serves
an empty etcd-style directory there.  Nothing in the test stack uses the
URL afterwards (no real VM boots).

    etcd-discovery-standin.py PORT
"""
import http.server
import json
import sys
import uuid


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/new"):
            body = ("http://127.0.0.1:%d/%s" % (self.server.server_address[1], uuid.uuid4().hex)).encode()
            ctype = "text/plain"
        else:
            body = json.dumps({"action": "get", "node": {"key": self.path, "dir": True, "nodes": []}}).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("etcd-discovery-standin: %s\n" % (fmt % args))


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
