"""`evsectl serve DIR`: a small threaded HTTP(S) file server for firmware images.

Serves the files of one directory (GET/HEAD) with single-range support
(`Range: bytes=N-`, `bytes=N-M`, `bytes=-N` -> 206 with Content-Range; a range
that starts past the end -> 416), a strong ETag and Last-Modified, and
`If-Range`. It never serves anything outside DIR, and inside DIR only
firmware images (IMAGE_SUFFIXES: .img, .bin) and their descriptors (X.json
next to X.img or X.bin): never keys, certificates, databases, credentials or
hidden files, whatever else lies in the directory (docs/security.md).

Resource limits (slowloris): every socket operation times out after
`timeout` s, the request line and headers must arrive within
`header_timeout` s in total, and at most `max_connections` connections are
served at once (more get 503 and are closed at once). Fault injection is for
tests only: serve() refuses to bind it to anything but loopback.

Fault injection (for tests of the device-side downloader) is decided per
request, from two sources that are merged:

* the query string of the request itself, e.g. ``/fw.img?drop=1000``:
    drop=N         close the connection after N body bytes
    droprand=S:LO:HI  drop after a random count in [LO, HI] (seeded by S, the
                   start offset and how many such requests came before, so a
                   run is reproducible)
    extra=N        send N bytes more than Content-Length declares
    stall=T        stop sending for T seconds (after stall_at=N body bytes, 0
                   by default), then continue
    norange=1      ignore Range: always answer 200 with the whole file
    cl=D           declare Content-Length off by D (e.g. cl=-10, cl=50)
    status=C       answer with status C and an empty body
    stall_head=T   wait T seconds before sending the response header
    redirect=P     answer 302 with Location: P
    ignore_ifrange=1  answer a Range request with 206 even when If-Range does
                   not match (a broken cache/server)
* a :class:`Faults` object given to :func:`serve` (``faults=``): rules pushed
  by the host test (``faults.push(path='/fw.img', drop=100)`` for the next
  matching request, ``faults.always(...)`` for every one) and, when the server
  was started with faults enabled, ``GET /_fault?path=/x&drop=N&times=K``
  which queues a rule over HTTP (device tests use this). Every request is
  logged in ``faults.log`` as (path, range header, status).
"""
import argparse
import email.utils
import ipaddress
import os
import random
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_CHUNK = 16 * 1024
IMAGE_SUFFIXES = (".img", ".bin")
DESCRIPTOR_SUFFIX = ".json"
TIMEOUT_S = 30.0             # any single socket read/write
HEADER_TIMEOUT_S = 10.0      # request line + headers, in total
MAX_CONNECTIONS = 32
_KEYS = ("drop", "droprand", "extra", "stall", "stall_at", "stall_head", "norange", "cl",
         "status", "redirect", "ignore_ifrange")


class Faults:
    """Fault rules applied to requests; thread safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._once = []      # [(path or None, spec, times_left)]
        self._always = []    # [(path or None, spec)]
        self.log = []        # [(path, range header or None, status)]
        self._counts = {}

    def push(self, path=None, times=1, **spec):
        """Apply `spec` to the next `times` requests for `path` (any path if None)."""
        _check_spec(spec)
        with self._lock:
            self._once.append([path, spec, int(times)])

    def always(self, path=None, **spec):
        _check_spec(spec)
        with self._lock:
            self._always.append((path, spec))

    def clear(self):
        with self._lock:
            self._once = []
            self._always = []
            self.log = []
            self._counts = {}

    def take(self, path):
        out = {}
        with self._lock:
            for p, spec in self._always:
                if p is None or p == path:
                    out.update(spec)
            for rule in self._once:
                if rule[2] > 0 and (rule[0] is None or rule[0] == path):
                    out.update(rule[1])
                    rule[2] -= 1
                    break
            self._once = [r for r in self._once if r[2] > 0]
        return out

    def count(self, key):
        """How many times `key` was counted before (for reproducible randomness)."""
        with self._lock:
            n = self._counts.get(key, 0)
            self._counts[key] = n + 1
        return n

    def record(self, path, rng, status):
        with self._lock:
            self.log.append((path, rng, status))


def _check_spec(spec):
    for k in spec:
        if k not in _KEYS:
            raise ValueError("unknown fault %r (known: %s)" % (k, ", ".join(_KEYS)))


def _spec_from_query(q):
    spec = {}
    for k, v in urllib.parse.parse_qsl(q):
        if k in _KEYS:
            spec[k] = v
    return spec


def parse_range(value, size):
    """Parse a single-range `Range` header against `size`.

    Returns (start, end_inclusive), None when the header is absent or not a
    single byte range we understand (serve the whole file), or 'unsatisfiable'.
    """
    if not value:
        return None
    value = value.strip()
    if not value.startswith("bytes=") or "," in value:
        return None
    first, sep, last = value[6:].strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1) if size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0:
        return None
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, size - 1)


def servable(name):
    """True for the file names serve() hands out: images and descriptors."""
    base = os.path.basename(name)
    if base.startswith(".") or not base:
        return False
    return base.endswith(IMAGE_SUFFIXES) or base.endswith(DESCRIPTOR_SUFFIX)


def is_loopback(host):
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Deadline:
    """rfile wrapper: every read gets only what is left of the header deadline."""

    def __init__(self, rfile, sock, seconds, after):
        self._f, self._sock, self._after = rfile, sock, after
        self._end = time.monotonic() + seconds

    def _arm(self):
        left = self._end - time.monotonic()
        if left <= 0:
            raise socket.timeout("request header deadline")
        self._sock.settimeout(min(left, self._after))

    def readline(self, *a):
        self._arm()
        return self._f.readline(*a)

    def read(self, *a):
        self._arm()
        return self._f.read(*a)

    def __getattr__(self, name):
        return getattr(self._f, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "evsectl-serve/1"

    def setup(self):
        self.timeout = self.server.io_timeout
        if isinstance(self.request, ssl.SSLSocket):
            # the TLS handshake runs here, under the header deadline, not in
            # the accept loop (a client that never finishes it holds one slot)
            self.request.settimeout(min(self.server.io_timeout, self.server.header_timeout))
            self.request.do_handshake()
        BaseHTTPRequestHandler.setup(self)
        self._raw_rfile = self.rfile
        self.rfile = _Deadline(self.rfile, self.connection, self.server.header_timeout,
                               self.server.io_timeout)

    def handle_one_request(self):
        try:
            BaseHTTPRequestHandler.handle_one_request(self)
        except (socket.timeout, TimeoutError):
            self.close_connection = True
        finally:
            self.connection.settimeout(self.server.io_timeout)

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("serve: " + (fmt % args) + "\n")

    def do_HEAD(self):
        self._handle(head=True)

    def do_GET(self):
        self._handle(head=False)

    def _send_empty(self, status, extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.server.faults.record(self._path, self.headers.get("Range"), status)

    def _handle(self, head):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        self._path = path
        faults = self.server.faults
        if path == "/_fault" and self.server.fault_endpoint:
            q = dict(urllib.parse.parse_qsl(url.query))
            p = q.pop("path", None)
            times = int(q.pop("times", "1"))
            try:
                faults.push(p, times=times, **q)
            except ValueError:
                return self._send_empty(400)
            return self._send_empty(204)
        spec = {}
        if self.server.fault_endpoint:
            spec = _spec_from_query(url.query)
            spec.update(faults.take(path))
        if "stall_head" in spec:
            time.sleep(float(spec["stall_head"]))
        if "redirect" in spec:
            return self._send_empty(302, [("Location", spec["redirect"])])
        fs_path = self._resolve(path)
        if fs_path is None:
            return self._send_empty(404)
        if "status" in spec:
            return self._send_empty(int(spec["status"]))
        st = os.stat(fs_path)
        size = st.st_size
        etag = '"%x-%x"' % (st.st_mtime_ns, size)
        last_mod = email.utils.formatdate(st.st_mtime, usegmt=True)
        rng = None
        if str(spec.get("norange", "0")).lower() in ("0", "false", ""):
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range.strip() in (etag, last_mod) or \
                    str(spec.get("ignore_ifrange", "0")) not in ("0", "false", ""):
                rng = parse_range(self.headers.get("Range"), size)
        if rng == "unsatisfiable":
            return self._send_empty(416, [("Content-Range", "bytes */%d" % size)])
        if rng is None:
            start, end, status = 0, size - 1, 200
        else:
            start, end = rng
            status = 206
        length = end - start + 1 if size else 0
        declared = length + int(spec.get("cl", 0))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_mod)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Content-Length", str(max(0, declared)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        faults.record(path, self.headers.get("Range"), status)
        if head:
            return
        limit = length
        if "drop" in spec:
            limit = min(limit, int(spec["drop"]))
        if "droprand" in spec:
            seed, lo, hi = (int(x) for x in spec["droprand"].split(":"))
            k = faults.count(spec["droprand"])
            limit = min(limit, random.Random("%d:%d:%d" % (seed, start, k)).randint(lo, hi))
        stall = float(spec.get("stall", 0))
        stall_at = int(spec.get("stall_at", 0))
        extra = int(spec.get("extra", 0))
        try:
            self._copy(fs_path, start, limit, stall, stall_at)
            if limit == length and extra > 0:
                self.wfile.write(b"\xa5" * extra)
            self.wfile.flush()
            if limit < length:  # abrupt close, like a dropped connection
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass

    def _copy(self, fs_path, start, count, stall, stall_at):
        sent = 0
        with open(fs_path, "rb") as f:
            f.seek(start)
            while sent < count:
                if stall and sent <= stall_at < sent + _CHUNK:
                    n = stall_at - sent
                    if n:
                        self.wfile.write(f.read(n))
                        sent += n
                    self.wfile.flush()
                    time.sleep(stall)
                    stall = 0
                    continue
                data = f.read(min(_CHUNK, count - sent))
                if not data:
                    break
                self.wfile.write(data)
                sent += len(data)

    def _resolve(self, path):
        root = self.server.root
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." or "\\" in p or "\0" in p for p in parts) or not parts:
            return None
        full = os.path.realpath(os.path.join(root, *parts))
        if not full.startswith(root + os.sep) or not os.path.isfile(full):
            return None
        if not servable(parts[-1]) or not servable(full) or any(p.startswith(".") for p in parts):
            return None
        if full.endswith(DESCRIPTOR_SUFFIX):   # a descriptor only next to its image
            stem = full[:-len(DESCRIPTOR_SUFFIX)]
            if not any(os.path.isfile(stem + x) for x in IMAGE_SUFFIXES):
                return None
        return full


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Retry-After: 5\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            ThreadingHTTPServer.process_request(self, request, client_address)
        except Exception:
            self.slots.release()
            raise

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        if isinstance(e, (OSError, ssl.SSLError)):   # timeouts, resets, failed handshakes
            if self.verbose:
                sys.stderr.write("serve: %s: %s\n" % (client_address[0], e))
            return
        ThreadingHTTPServer.handle_error(self, request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            ThreadingHTTPServer.process_request_thread(self, request, client_address)
        finally:
            self.slots.release()


def serve(directory, host="127.0.0.1", port=0, faults=None, tls=None, verbose=False,
          timeout=TIMEOUT_S, header_timeout=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS):
    """Start serving `directory` in a background thread; return (server, port).

    `faults`: None (no fault injection), True (enable the /_fault endpoint
    with a fresh Faults object, available as server.faults) or a Faults
    object (also enables the endpoint); only on a loopback `host`. `tls`:
    (certfile, keyfile) for HTTPS. Limits: see the module doc.
    Stop with server.shutdown(); server.server_close().
    """
    root = os.path.realpath(directory)
    if not os.path.isdir(root):
        raise ValueError("not a directory: %s" % directory)
    if faults not in (None, False) and not is_loopback(host):
        raise ValueError("fault injection is for tests: it binds only to loopback (127.0.0.1, ::1, "
                         "localhost), not %r" % (host,))
    if not (timeout > 0 and header_timeout > 0 and int(max_connections) >= 1):
        raise ValueError("timeouts must be > 0 and max_connections >= 1")
    srv = _Server((host, port), _Handler, bind_and_activate=False)
    if ":" in host:
        srv.socket.close()
        srv.address_family = socket.AF_INET6
        srv.socket = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        srv.server_bind()
        srv.server_activate()
    except OSError:
        srv.server_close()
        raise
    srv.io_timeout = float(timeout)
    srv.header_timeout = float(header_timeout)
    srv.slots = threading.BoundedSemaphore(int(max_connections))
    srv.refused = 0
    srv.root = root
    srv.verbose = verbose
    srv.fault_endpoint = faults is not None and faults is not False
    srv.faults = faults if isinstance(faults, Faults) else Faults()
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    t = threading.Thread(target=srv.serve_forever, name="serve", daemon=True)
    t.start()
    srv.thread = t
    return srv, srv.server_address[1]


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="evsectl serve",
        description="Serve firmware images (.img, .bin) and their .json descriptors over HTTP(S) with "
                    "Range support (resumable downloads); nothing else in DIR is served.")
    ap.add_argument("dir", help="directory whose files are served")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default 8000)")
    ap.add_argument("--port-file", help="write the bound port number into this file")
    ap.add_argument("--cert", help="PEM certificate: serve HTTPS")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--faults", action="store_true",
                    help="enable fault injection (/_fault endpoint and query parameters) for tests; "
                         "loopback --host only")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S,
                    help="socket timeout per read/write in s (default %(default)s)")
    ap.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S,
                    help="time a client has to send its request headers in s (default %(default)s)")
    ap.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                    help="connections served at once; more get 503 (default %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")
    a = ap.parse_args(argv)
    try:
        srv, port = serve(a.dir, a.host, a.port, faults=True if a.faults else None,
                          tls=(a.cert, a.key or a.cert) if a.cert else None, verbose=a.verbose,
                          timeout=a.timeout, header_timeout=a.header_timeout,
                          max_connections=a.max_connections)
    except (OSError, ValueError) as e:
        sys.stderr.write("evsectl serve: %s\n" % e)
        return 2
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, a.port_file)
    sys.stderr.write("serving images (%s) and their .json descriptors from %s on http%s://%s:%d/\n"
                     % (", ".join(IMAGE_SUFFIXES), a.dir, "s" if a.cert else "", a.host, port))
    try:
        while srv.thread.is_alive():
            srv.thread.join(1.0)
    except KeyboardInterrupt:
        pass
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
