#!/usr/bin/python3
"""A Kubernetes API replay server for bomarun's Kubernetes tests.

No kube-apiserver can run here, so this answers as one from recorded real
responses (tests/data/k8s-recorded/, each file's source in its README,
and recorded/ beside this script): HTTPS on 127.0.0.1 with a CA it makes
(certs.sh), client-certificate authentication (a certificate signed by that
CA, or the bearer token given with --token; without either, or with a
certificate from another CA, every request gets the recorded 401 Status,
as from an apiserver).

  replay_server.py --data DIR --certs DIR [--routes FILE] [--token T] [--port N]

Prints its port on the first line of stdout once it listens.

What it serves, for the current scenario (routes.json: "default" plus the
overlays named in PUT /_replay/scenario):
  - a route's recording, as the apiserver sends it: compact JSON ending in
    one "\\n" (a wire recording byte for byte; a re-serialized one
    compacted, keys in their order, <>& escaped as Go does), pretty-printed
    for a curl/wget/browser User-Agent; a bare item array
    (*-itemsarray.json) wrapped in a List; a Status file with its code.
  - a route may list several recordings: each request advances to the next,
    the last one stays (a cluster that changes between polls).
  - lists: labelSelector, fieldSelector, limit and continue (the recorded
    list split into pages), as the apiserver does them; a namespace's
    collection is filtered from the all-namespaces recording when it has no
    recording of its own; a single object is found in its collection.
  - pod logs from recorded/ (?container=, ?tailLines=).
  - writes (POST, PATCH merge/strategic/json, DELETE) kept in memory over
    the recordings, answered with the object as the apiserver does.
  - errors as Status objects: the recorded ones where the route names them;
    otherwise NotFound/AlreadyExists/BadRequest made from the recorded 404's
    shape (kind, apiVersion, metadata, status, message, reason, details,
    code; messages in the apiserver's own wording).

Control (needs the same authentication):
  PUT  /_replay/scenario  {"use": [names], "routes": {...}, "reset_store": bool}
  GET  /_replay/requests  the requests served so far (method, path, query,
                          user, content_type, accept, user_agent, body)
  DELETE /_replay/requests
"""
import argparse, base64, copy, io, json, os, re, ssl, subprocess, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qsl

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK = threading.Lock()

CORE_KINDS = {
    "nodes": "Node", "pods": "Pod", "services": "Service", "namespaces": "Namespace",
    "endpoints": "Endpoints", "configmaps": "ConfigMap", "events": "Event", "secrets": "Secret",
    "deployments": "Deployment", "daemonsets": "DaemonSet", "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet", "clusters": "Cluster", "machines": "Machine",
    "openstackclusters": "OpenStackCluster", "ociclusters": "OCICluster",
}
CLUSTER_SCOPED = {"nodes", "namespaces", "persistentvolumes"}


class State:
    def __init__(self, data_dir, routes):
        self.data_dir = data_dir
        self.table = routes["scenarios"]
        self.use = ["default"]
        self.extra = {}
        self.counters = {}
        self.store = {}        # (collection path, name) -> object written by a client
        self.deleted = set()   # (collection path, name) of recorded objects deleted
        self.requests = []
        self.rv = 1000

    def route(self, key):
        found = None
        for name in self.use:
            r = self.table.get(name, {})
            if key in r:
                found = r[key]
        if key in self.extra:
            found = self.extra[key]
        if isinstance(found, list):
            n = self.counters.get(key, 0)
            self.counters[key] = n + 1
            return found[min(n, len(found) - 1)]
        return found

    def peek(self, key):
        """The route without advancing a sequence."""
        found = None
        for name in self.use:
            found = self.table.get(name, {}).get(key, found)
        found = self.extra.get(key, found)
        if isinstance(found, list):
            n = self.counters.get(key, 0)
            return found[min(n, len(found) - 1)]
        return found

    def load(self, name):
        path = os.path.join(HERE, name[6:]) if name.startswith("stack:") else os.path.join(self.data_dir, name)
        with open(path, "rb") as f:
            raw = f.read()
        return raw


def go_escape(s):
    # Go's encoding/json escapes these inside strings (they occur nowhere else in JSON).
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def compact(obj):
    return (go_escape(json.dumps(obj, separators=(",", ":"), ensure_ascii=False)) + "\n").encode()


def pretty(obj):
    return (go_escape(json.dumps(obj, indent=2, ensure_ascii=False)) + "\n").encode()


def is_wire(raw):
    body = raw.rstrip(b"\n")
    return b"\n" not in body and raw.endswith(b"\n")


# --- API paths -----------------------------------------------------------

def parse_api_path(path):
    """/api/v1[/namespaces/NS]/RES[/NAME[/SUB]] or /apis/G/V/... ->
    dict(group, version, namespace, resource, name, sub) or None."""
    segs = [s for s in path.split("/") if s]
    if len(segs) >= 2 and segs[0] == "api":
        group, version, rest = "", segs[1], segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        return None
    return {"group": group, "version": version, "namespace": ns, "resource": rest[0],
            "name": rest[1] if len(rest) > 1 else None, "sub": rest[2] if len(rest) > 2 else None}


def api_prefix(p):
    return "/api/" + p["version"] if p["group"] == "" else "/apis/%s/%s" % (p["group"], p["version"])


def collection_path(p, namespace):
    base = api_prefix(p)
    if namespace:
        base += "/namespaces/" + namespace
    return base + "/" + p["resource"]


def qualified(p):
    return p["resource"] if p["group"] == "" else p["resource"] + "." + p["group"]


# --- selectors -------------------------------------------------------------

def label_match(labels, selector):
    labels = labels or {}
    for req in split_selector(selector):
        req = req.strip()
        if not req:
            continue
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", req)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in vals:
                return False
            if op == "notin" and key in labels and labels[key] in vals:
                return False
            continue
        m = re.match(r"^([\w./-]+)\s*(!=|==|=)\s*([\w./-]*)$", req)
        if m:
            key, op, val = m.groups()
            if op == "!=":
                if labels.get(key) == val:
                    return False
            elif labels.get(key) != val:
                return False
            continue
        if req.startswith("!"):
            if req[1:] in labels:
                return False
        elif req not in labels:
            return False
    return True


def split_selector(sel):
    out, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def field_value(obj, field):
    cur = obj
    for part in field.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_match(obj, selector):
    for req in selector.split(","):
        req = req.strip()
        if not req:
            continue
        m = re.match(r"^([\w.]+)\s*(!=|==|=)\s*(.*)$", req)
        if not m:
            continue
        field, op, val = m.groups()
        got = field_value(obj, field)
        got = "" if got is None else str(got)
        if (op == "!=") == (got == val):
            return False
    return True


# --- patches ----------------------------------------------------------------

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_pointer(doc, pointer):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    return parts


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = json_pointer(doc, op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ValueError("replace operation does not apply: doc is missing key: " + op["path"])
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                if last not in parent:
                    raise ValueError("remove operation does not apply: doc is missing path: " + op["path"])
                del parent[last]
        elif kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op.get("value"):
                raise ValueError("testing value %s failed" % op["path"])
        else:
            raise ValueError("Unexpected kind: " + kind)
    return doc


# --- the handler ------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None
    token = None
    status_404 = None
    client_ca_cn = "bomarun-replay-ca"

    def log_message(self, *args):
        pass

    # Responses ------------------------------------------------------------

    def send(self, code, body, ctype="application/json"):
        self.send_response_only(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", ctype)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def pretty_wanted(self):
        ua = (self.headers.get("User-Agent") or "").lower()
        return ua.startswith("curl/") or ua.startswith("wget/") or ua.startswith("mozilla/")

    def send_obj(self, code, obj, raw=None):
        if self.pretty_wanted():
            body = pretty(obj)
        elif raw is not None and is_wire(raw):
            body = raw     # the wire bytes as recorded
        else:
            body = compact(obj)
        self.send(code, body)

    def send_status(self, code, reason, message, details=None):
        st = copy.deepcopy(self.status_404)
        st["message"] = message
        st["reason"] = reason
        st["details"] = details if details is not None else {}
        st["code"] = code
        self.send_obj(code, st)

    def not_found_path(self):
        self.send_status(404, "NotFound", "the server could not find the requested resource")

    def not_found(self, p, name):
        details = {"name": name, "kind": p["resource"]}
        if p["group"]:
            details = {"name": name, "group": p["group"], "kind": p["resource"]}
        self.send_status(404, "NotFound", '%s "%s" not found' % (qualified(p), name), details)

    def send_recording(self, entry, p=None):
        """Serve a route entry: a file name, or {"status": file} / {"log": file}."""
        st = self.state
        if isinstance(entry, dict) and "status" in entry:
            raw = st.load(entry["status"])
            obj = json.loads(raw)
            return self.send_obj(int(obj.get("code", 500)), obj, raw)
        raw = st.load(entry)
        obj = json.loads(raw)
        if isinstance(obj, list):
            obj = self.wrap(obj, p)
            raw = None
        if isinstance(obj, dict) and obj.get("kind") == "Status" and isinstance(obj.get("code"), int):
            return self.send_obj(obj["code"], obj, raw)
        self.send_obj(200, obj, raw)

    @staticmethod
    def wrap(items, p):
        kind = CORE_KINDS.get(p["resource"], p["resource"].capitalize()) if p else "List"
        version = p["version"] if p and not p["group"] else ("%s/%s" % (p["group"], p["version"]) if p else "v1")
        return {"kind": kind + "List", "apiVersion": version, "metadata": {"resourceVersion": ""}, "items": items}

    # Authentication -------------------------------------------------------

    def user(self):
        cert = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
        if cert:
            # The x509 authenticator: only the cluster CA's certificates
            # name a user; another CA's is no credential at all (the
            # apiserver logs "certificate signed by unknown authority" and
            # the request is unauthenticated).
            issuer = dict(x[0] for x in cert.get("issuer", ()))
            if issuer.get("commonName") == self.client_ca_cn:
                subject = dict(x[0] for x in cert.get("subject", ()))
                return "x509:" + subject.get("commonName", "?")
        auth = self.headers.get("Authorization") or ""
        if self.token and auth == "Bearer " + self.token:
            return "token"
        return None

    # Dispatch ---------------------------------------------------------------

    def handle_one(self):
        u = urlparse(self.path)
        query = dict(parse_qsl(u.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        user = self.user()
        with LOCK:
            self.state.requests.append({
                "method": self.command, "path": u.path, "query": query, "user": user,
                "content_type": self.headers.get("Content-Type"), "accept": self.headers.get("Accept"),
                "user_agent": self.headers.get("User-Agent"), "body": body.decode("utf-8", "replace")})
        if user is None:
            raw = self.state.load("status-401-unauthorized-aks.json")
            return self.send_obj(401, json.loads(raw), raw)
        # The answer is made under the lock and written after it: a client
        # slow to read holds up nobody else.
        real, self.wfile = self.wfile, io.BytesIO()
        try:
            if u.path.startswith("/_replay/"):
                self.control(u.path, body)
            else:
                with LOCK:
                    self.api(u.path, query, body)
            out = self.wfile.getvalue()
        finally:
            self.wfile = real
        real.write(out)
        real.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_one

    def control(self, path, body):
        st = self.state
        with LOCK:
            if path == "/_replay/scenario" and self.command == "PUT":
                req = json.loads(body or b"{}")
                use = ["default"] + [n for n in req.get("use", []) if n != "default"]
                unknown = [n for n in use if n not in st.table]
                if unknown:
                    return self.send(400, compact({"error": "unknown scenario", "names": unknown}))
                st.use, st.extra, st.counters = use, req.get("routes", {}), {}
                if req.get("reset_store", True):
                    st.store, st.deleted = {}, set()
                return self.send(200, compact({"use": st.use}))
            if path == "/_replay/requests" and self.command == "GET":
                return self.send(200, compact(st.requests))
            if path == "/_replay/requests" and self.command == "DELETE":
                st.requests = []
                return self.send(200, compact({"cleared": True}))
        return self.send(404, compact({"error": "no such control path"}))

    def api(self, path, query, body):
        st = self.state
        key = self.command + " " + path
        entry = st.route(key)
        p = parse_api_path(path)
        if entry is not None and (not isinstance(entry, dict) or "log" not in entry):
            if self.command == "GET" and p and not p["name"] and not isinstance(entry, dict):
                return self.list_response(p, query, entry)
            return self.send_recording(entry, p)
        if p is None:
            return self.not_found_path()
        if self.command == "GET" and p["sub"] == "log":
            return self.log_response(p, query, entry)
        if self.command == "GET" and p["name"] is None:
            return self.list_response(p, query, None)
        if self.command == "GET" and p["sub"] is None:
            obj = self.find(p, p["name"], True)
            return self.send_obj(200, obj) if obj else self.not_found(p, p["name"])
        if self.command == "POST" and p["name"] is None:
            return self.create(p, body)
        if self.command == "PATCH" and p["name"] and p["sub"] is None:
            return self.patch(p, body)
        if self.command == "DELETE" and p["name"] and p["sub"] is None:
            return self.delete(p)
        return self.send_status(405, "MethodNotAllowed",
                                "the server does not allow this method on the requested resource")

    # Collections ------------------------------------------------------------

    def recorded_items(self, p, entry=None, advance=True):
        """The items of p's collection (namespace-filtered), the List
        envelope and the recorded bytes (None once anything differs from
        them); (None, None, None) when nothing answers the collection.
        `entry`: the route already taken for it (api() advanced it)."""
        st = self.state
        ns = p["namespace"]
        take = st.route if advance else st.peek
        source, from_all = entry, False
        if source is None:
            source = take("GET " + collection_path(p, ns))
        if source is None and ns:
            source = take("GET " + collection_path(p, None))
            from_all = source is not None
        if isinstance(source, dict):
            source = None
        items, envelope, raw = [], None, None
        if source is not None:
            raw = st.load(source)
            doc = json.loads(raw)
            if isinstance(doc, list):
                envelope, items, raw = self.wrap([], p), doc, None
            else:
                envelope, items = doc, doc.get("items") or []
            if from_all:
                items = [i for i in items if (i.get("metadata") or {}).get("namespace") == ns]
                raw = None
        coll = collection_path(p, ns)
        # Objects clients wrote, and recorded ones they deleted.
        out = []
        for it in items:
            name = (it.get("metadata") or {}).get("name")
            inns = (it.get("metadata") or {}).get("namespace")
            ckey = (collection_path(p, inns if p["resource"] not in CLUSTER_SCOPED else None), name)
            if ckey in st.deleted:
                raw = None
                continue
            if ckey in st.store:
                raw = None
                continue
            out.append(it)
        for (cpath, name), obj in st.store.items():
            if cpath == coll or (ns is None and cpath.endswith("/" + p["resource"]) and
                                 cpath.startswith(api_prefix(p) + "/")):
                out.append(obj)
                raw = None
        if source is None and not out:
            return None, None, None
        return out, envelope or self.wrap([], p), raw

    def list_response(self, p, query, entry):
        items, envelope, raw = self.recorded_items(p, entry)
        if items is None:
            return self.not_found_path()
        filtered = items
        if query.get("labelSelector"):
            filtered = [i for i in filtered if label_match((i.get("metadata") or {}).get("labels"),
                                                           query["labelSelector"])]
        if query.get("fieldSelector"):
            filtered = [i for i in filtered if field_match(i, query["fieldSelector"])]
        start = 0
        if query.get("continue"):
            try:
                tok = json.loads(base64.b64decode(query["continue"]))
                start = int(tok["start"])
            except Exception:
                return self.send_status(400, "BadRequest",
                                        "continue key is not valid: %s" % "incorrect encoded start resourceVersion")
        limit = int(query.get("limit") or 0)
        page = filtered[start:start + limit] if limit > 0 else filtered[start:]
        whole = len(page) == len(items) and start == 0
        out = dict(envelope)
        meta = dict(out.get("metadata") or {})
        meta.pop("continue", None)
        meta.pop("remainingItemCount", None)
        nxt = start + len(page)
        if limit > 0 and nxt < len(filtered):
            rv = meta.get("resourceVersion") or "0"
            meta["continue"] = base64.b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": int(rv) if str(rv).isdigit() else 0, "start": str(nxt)},
                separators=(",", ":")).encode()).decode()
            meta["remainingItemCount"] = len(filtered) - nxt
        out["metadata"] = meta
        out["items"] = page
        self.send_obj(200, out, raw if whole and raw is not None else None)

    def find(self, p, name, advance=False):
        st = self.state
        ns = p["namespace"]
        ckey = (collection_path(p, ns), name)
        if ckey in st.store:
            return st.store[ckey]
        if ckey in st.deleted:
            return None
        q = dict(p, name=None)
        items, envelope, _ = self.recorded_items(q, None, advance)
        for it in items or []:
            if (it.get("metadata") or {}).get("name") == name:
                obj = dict(it)
                # A single object carries its kind and apiVersion.
                if envelope and "kind" not in obj and envelope.get("kind", "").endswith("List"):
                    obj = dict([("kind", envelope["kind"][:-4]),
                                ("apiVersion", envelope.get("apiVersion"))] + list(it.items()))
                return obj
        return None

    # Writes -------------------------------------------------------------------

    def next_rv(self):
        self.state.rv += 1
        return str(self.state.rv)

    def create(self, p, body):
        try:
            obj = json.loads(body)
        except ValueError as e:
            return self.send_status(400, "BadRequest", "the body of the request was in an unknown format: %s" % e)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return self.send_status(422, "Invalid", "%s \"\" is invalid: metadata.name: Required value: name or "
                                    "generateName is required" % qualified(p),
                                    {"kind": p["resource"], "causes": [{"reason": "FieldValueRequired",
                                     "message": "Required value: name or generateName is required",
                                     "field": "metadata.name"}]})
        ckey = (collection_path(p, p["namespace"]), name)
        if self.find(p, name) is not None:
            details = {"name": name, "kind": p["resource"]}
            if p["group"]:
                details["group"] = p["group"]
            return self.send_status(409, "AlreadyExists", '%s "%s" already exists' % (qualified(p), name), details)
        if p["namespace"]:
            meta["namespace"] = p["namespace"]
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self.next_rv()
        meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.state.store[ckey] = obj
        self.state.deleted.discard(ckey)
        self.send_obj(201, obj)

    def patch(self, p, body):
        name = p["name"]
        obj = self.find(p, name)
        if obj is None:
            return self.not_found(p, name)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            patch = json.loads(body)
            if ctype == "application/json-patch+json":
                new = json_patch(obj, patch)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(obj, patch)
            else:
                return self.send_status(415, "UnsupportedMediaType",
                                        "the body of the request was in an unknown format - accepted media types "
                                        "include: application/json-patch+json, application/merge-patch+json, "
                                        "application/apply-patch+yaml")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return self.send_status(422, "Invalid", str(e))
        new.setdefault("metadata", {})["resourceVersion"] = self.next_rv()
        self.state.store[(collection_path(p, p["namespace"]), name)] = new
        self.send_obj(200, new)

    def delete(self, p):
        name = p["name"]
        obj = self.find(p, name)
        if obj is None:
            return self.not_found(p, name)
        ckey = (collection_path(p, p["namespace"]), name)
        self.state.store.pop(ckey, None)
        self.state.deleted.add(ckey)
        self.send_obj(200, obj)

    # Logs ------------------------------------------------------------------

    def log_response(self, p, query, entry):
        if not isinstance(entry, dict) or "log" not in entry:
            return self.send_status(404, "NotFound", "the server could not find the requested resource")
        want = query.get("container") or entry.get("container")
        if entry.get("container") and want != entry["container"]:
            return self.send_status(400, "BadRequest", 'container %s is not valid for pod %s' % (want, p["name"]))
        text = self.state.load(entry["log"]).decode()
        # vz bug-report captures frame the log between START/END lines.
        m = re.search(r"==== START logs for container [^\n]*====\n(.*?)==== END logs", text, re.S)
        lines = (m.group(1) if m else text).splitlines(True)
        tail = query.get("tailLines")
        if tail is not None and tail.isdigit():
            lines = lines[-int(tail):] if int(tail) > 0 else []
        self.send(200, "".join(lines).encode(), "text/plain")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ctx = None

    def finish_request(self, request, client_address):
        # The handshake runs in the request's thread: a client that stalls
        # or fails it holds up nobody else.
        try:
            request.settimeout(30)
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="the recordings (tests/data/k8s-recorded)")
    ap.add_argument("--certs", required=True, help="directory for the CA and certificates (made if absent)")
    ap.add_argument("--routes", default=os.path.join(HERE, "routes.json"))
    ap.add_argument("--token", help="also accept this bearer token")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.certs, "ca.crt")):
        subprocess.run([os.path.join(HERE, "certs.sh"), args.certs], check=True, stdout=subprocess.DEVNULL)
    with open(args.routes) as f:
        routes = json.load(f)
    Handler.state = State(args.data, routes)
    Handler.token = args.token
    with open(os.path.join(args.data, "status-404-notfound-pod.json")) as f:
        Handler.status_404 = json.load(f)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(args.certs, "server.crt"), os.path.join(args.certs, "server.key"))
    # As an apiserver: a client certificate is asked for but not required
    # (a token is another credential).  The TLS layer accepts the cluster
    # CA's certificates and the "other CA" ones certs.sh makes, so those
    # reach the authenticator (user()) and get the apiserver's 401 rather
    # than a failed handshake.
    ctx.load_verify_locations(os.path.join(args.certs, "ca.crt"))
    if os.path.exists(os.path.join(args.certs, "rogue-ca.crt")):
        ctx.load_verify_locations(os.path.join(args.certs, "rogue-ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.ctx = ctx
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
