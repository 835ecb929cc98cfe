# Resumable HTTP/1.1 (and HTTPS) download client for the update job.
#
# Cooperative: every poll() does a bounded amount of work (one connect step,
# one send, or at most one socket read of len(buf) bytes) on a non-blocking
# socket and returns at once, so the charging control loop is never delayed by
# the network. One preallocated buffer; the caller copies each chunk out
# (to flash) before the next poll().
#
#   f = Fetcher(url, clock=time.ticks_ms)
#   f.start(offset=0, limit=max_total_size)
#   while True:
#       n = f.poll()
#       if n > 0:   write(f.chunk)          # bytes at offset f.pos - n
#       elif n == DONE: break               # body complete
#       elif n == RESTART: truncate()       # server ignored Range and the
#                                           # content changed: start over at 0
#   (FetchError(code, detail) on any failure; f.pos says how far it got)
#
# Only getaddrinfo() blocks (name resolution); use an IP literal or a fast
# resolver on boards.
from micropython import const
import errno
import select
import socket
import time

DONE = const(-1)
RESTART = const(-2)

# error codes (FetchError.code)
E_URL = "url"              # malformed URL or unsupported scheme
E_DNS = "dns"              # host name did not resolve
E_CONNECT = "connect"      # TCP connect refused / failed
E_TLS = "tls"              # TLS setup or handshake failed
E_TIMEOUT = "timeout"      # no byte for timeout_ms (or connect_timeout_ms)
E_HEADER = "header"        # malformed or oversized response header
E_HTTP = "http"            # unexpected HTTP status (detail = status)
E_RANGE = "range"          # bad Content-Range / 416 / length mismatch
E_TOO_BIG = "too_big"      # more bytes than the caller's limit
E_CLOSED = "closed"        # connection closed before the declared end
E_REDIRECT = "redirect"    # too many redirects or bad Location
E_ENCODING = "encoding"    # Transfer-Encoding we do not speak (chunked)
E_IO = "io"                # other socket error
E_CHANGED = "changed"      # a 206 whose validator is not the one resumed from

_IDLE = const(0)
_CONNECT = const(1)
_SEND = const(2)
_HEAD = const(3)
_BODY = const(4)
_DONE = const(5)

_EAGAIN = (errno.EAGAIN, errno.EINPROGRESS, errno.EALREADY, errno.ETIMEDOUT)
# mbedTLS: X509_CERT_VERIFY_FAILED, SSL_BAD_CERTIFICATE / fatal alert, X509 parse errors
_X509_FAILED = (-0x2700, -0x7A00, -0x7780, -0x2180, -0x2200)


class FetchError(Exception):
    def __init__(self, code, detail=None):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        return self.code if self.detail is None else "%s: %s" % (self.code, self.detail)


def parse_url(url):
    """'http[s]://host[:port]/path' -> (tls, host, port, path); FetchError(E_URL)."""
    if not isinstance(url, str):
        raise FetchError(E_URL, "not a string")
    if url.startswith("http://"):
        tls, rest, port = False, url[7:], 80
    elif url.startswith("https://"):
        tls, rest, port = True, url[8:], 443
    else:
        raise FetchError(E_URL, "scheme must be http or https")
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if "@" in hostport or " " in path or "\r" in path or "\n" in path:
        raise FetchError(E_URL, "unsupported characters")
    if hostport.startswith("["):
        j = hostport.find("]")
        if j < 0:
            raise FetchError(E_URL, "bad IPv6 literal")
        host, tail = hostport[1:j], hostport[j + 1:]
    else:
        j = hostport.find(":")
        host, tail = (hostport, "") if j < 0 else (hostport[:j], hostport[j:])
    if tail:
        if not tail.startswith(":"):
            raise FetchError(E_URL, "bad port")
        try:
            port = int(tail[1:])
        except ValueError:
            raise FetchError(E_URL, "bad port")
    if not host or not 0 < port < 65536:
        raise FetchError(E_URL, "bad host or port")
    return tls, host, port, path


class Fetcher:
    def __init__(self, url, clock=None, bufsize=1024, timeout_ms=10000,
                 connect_timeout_ms=10000, max_redirects=3, tls_context=None, buf=None,
                 user_agent="evse-agent", cadata=None, origins=None):
        self._target = parse_url(url)
        # https: the server's chain must verify against cadata (DER CA
        # certificate) and name the host; no CA -> refused (fail closed)
        self.cadata = cadata
        # redirects may only go to these (tls, host, port); default: the URL's own
        t = self._target
        self.origins = origins if origins is not None else ((t[0], t[1], t[2]),)
        self.url = url
        self.clock = clock or time.ticks_ms
        self.buf = buf if buf is not None else bytearray(bufsize)
        self._mv = memoryview(self.buf)
        self.timeout_ms = timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.max_redirects = max_redirects
        self.tls_context = tls_context
        self.user_agent = user_agent
        self._sock = None
        self._poller = None
        self._state = _IDLE
        self.pos = 0          # absolute offset of the next byte delivered
        self.limit = None     # upper bound on the total size (None = unbounded)
        self.total = None     # full resource size, when the server said it
        self.status = None    # HTTP status of the current response
        self.etag = None      # validator of the resource (ETag or Last-Modified)
        self.chunk = None     # memoryview of the bytes delivered by the last poll()
        self.received = 0     # body bytes received on this connection
        self._end = None

    # -- control ---------------------------------------------------------
    def start(self, offset=0, limit=None, validator=None):
        """Begin (or resume) the transfer at byte `offset`.

        `limit`: the most bytes the whole resource may have (endless-data
        bound). `validator`: the ETag/Last-Modified seen before, sent as
        If-Range so a changed file comes back whole (-> RESTART)."""
        if offset < 0 or (limit is not None and offset > limit):
            raise FetchError(E_RANGE, "offset %d outside limit" % offset)
        self.close()
        self.pos = offset
        self._want = offset
        self.limit = limit
        self.etag = validator
        self._redirects = 0
        self._begin()

    def set_limit(self, limit):
        """Tighten the bound (e.g. once the image header says its size)."""
        self.limit = limit
        if limit is None:
            return
        end = self._end if self._state == _BODY else None
        if self.pos > limit or (end is not None and end > limit):
            self.close()
            raise FetchError(E_TOO_BIG, "%d > %d" % (end or self.pos, limit))

    def close(self):
        s = self._sock
        self._sock = None
        self._poller = None
        self._state = _IDLE
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    @property
    def done(self):
        return self._state == _DONE

    # -- the step --------------------------------------------------------
    def poll(self):
        """One bounded step. Returns bytes delivered (> 0, in self.chunk),
        0 (nothing yet), DONE or RESTART. Raises FetchError."""
        st = self._state
        try:
            if st == _BODY:
                return self._body()
            if st == _HEAD:
                return self._head()
            if st == _SEND:
                return self._send()
            if st == _CONNECT:
                return self._connect()
            if st == _DONE:
                return DONE
            raise FetchError(E_IO, "not started")
        except FetchError:
            self.close()
            raise
        except ValueError as e:
            # mbedTLS verification verdicts (MicroPython raises them as ValueError)
            self.close()
            if not self._target[0]:
                raise
            why = " ".join(str(e).split())
            raise FetchError(E_TLS, "server certificate not trusted for %s: %s"
                             % (self._target[1], why[:120] or "verification failed"))
        except OSError as e:
            self.close()
            code = e.args[0] if e.args else None
            if code in (errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN):
                raise FetchError(E_CLOSED, "reset at %d" % self.pos)
            if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                raise FetchError(E_CONNECT, code)
            if self._target[0] and isinstance(code, int) and code in _X509_FAILED:
                raise FetchError(E_TLS, "server certificate not trusted for %s (chain, host name "
                                 "or validity; mbedTLS %d)" % (self._target[1], code))
            raise FetchError(E_TLS if self._target[0] else E_IO, code)

    # -- internals -------------------------------------------------------
    def _begin(self):
        tls, host, port, _ = self._target
        try:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError:
            raise FetchError(E_DNS, host)
        if not ai:
            raise FetchError(E_DNS, host)
        af, addr = ai[0][0], ai[0][-1]
        s = socket.socket(af, socket.SOCK_STREAM)
        self._sock = s
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            if e.args[0] not in _EAGAIN:
                self.close()
                raise FetchError(E_CONNECT, e.args[0])
        self._poller = select.poll()
        self._poller.register(s, select.POLLOUT)
        self._state = _CONNECT
        self._t = self.clock()
        self.status = None
        self.received = 0
        self.chunk = None

    def _expired(self, ms):
        return time.ticks_diff(self.clock(), self._t) > ms

    def _connect(self):
        ev = self._poller.poll(0)
        if not ev:
            if self._expired(self.connect_timeout_ms):
                raise FetchError(E_TIMEOUT, "connect")
            return 0
        if ev[0][1] & (select.POLLERR | select.POLLHUP):
            raise FetchError(E_CONNECT, "refused")
        self._poller = None
        tls, host, _, path = self._target
        if tls:
            self._wrap_tls(host)
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nConnection: close\r\n" % (
            path, host, self.user_agent)
        if self._want:
            req += "Range: bytes=%d-\r\n" % self._want
            if self.etag:
                req += "If-Range: %s\r\n" % self.etag
        self._req = (req + "\r\n").encode()
        self._sent = 0
        self._state = _SEND
        self._t = self.clock()
        return self._send()

    def _wrap_tls(self, host):
        ctx = self.tls_context
        try:
            if ctx is None:
                if not self.cadata:
                    raise FetchError(E_TLS, "no CA configured to verify %s" % host)
                import ssl
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=self.cadata)
                self.tls_context = ctx
            self._sock = ctx.wrap_socket(self._sock, server_hostname=host,
                                         do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            raise FetchError(E_TLS, str(e))

    def _send(self):
        req = self._req
        try:
            n = self._sock.write(req if self._sent == 0 else req[self._sent:])
        except OSError as e:
            if e.args[0] not in _EAGAIN:
                raise
            n = None
        if n:
            self._sent += n
            self._t = self.clock()
        if self._sent >= len(req):
            self._req = None
            self._state = _HEAD
            self._filled = 0
        elif self._expired(self.timeout_ms):
            raise FetchError(E_TIMEOUT, "send")
        return 0

    def _read(self, mv):
        try:
            n = self._sock.readinto(mv)
        except OSError as e:
            if e.args[0] not in _EAGAIN:
                raise
            n = None
        if n is None:
            if self._expired(self.timeout_ms):
                raise FetchError(E_TIMEOUT, "no data at %d" % self.pos)
            return None
        self._t = self.clock()
        return n

    def _head(self):
        filled = self._filled
        if filled >= len(self.buf):
            raise FetchError(E_HEADER, "too long")
        n = self._read(self._mv[filled:])
        if n is None:
            return 0
        if n == 0:
            raise FetchError(E_CLOSED, "in header")
        filled += n
        self._filled = filled
        end = self.buf.find(b"\r\n\r\n", 0, filled)
        if end < 0:
            return 0
        self._parse_head(bytes(self._mv[:end]))
        if self._state != _BODY:  # redirect: reconnecting
            return 0
        rest = filled - end - 4
        if self._restart:
            # tell the caller first; the bytes already read stay in buf
            # (nothing else writes it) and go out with the next poll()
            self._pending = end + 4 if rest > 0 else 0
            self._pending_n = rest
            return RESTART
        if rest <= 0:
            return self._check_end(False)
        return self._deliver(end + 4, rest)

    def _parse_head(self, head):
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise FetchError(E_HEADER, "status line")
        try:
            status = int(parts[1])
        except ValueError:
            raise FetchError(E_HEADER, "status")
        self.status = status
        clen = crange = loc = te = etag = lastmod = None
        for ln in lines[1:]:
            i = ln.find(b":")
            if i <= 0:
                raise FetchError(E_HEADER, "header line")
            k = ln[:i].strip().lower()
            v = ln[i + 1:].strip()
            if k == b"content-length":
                clen = v
            elif k == b"content-range":
                crange = v
            elif k == b"location":
                loc = v
            elif k == b"transfer-encoding":
                te = v
            elif k == b"etag":
                etag = v
            elif k == b"last-modified":
                lastmod = v
        if status in (301, 302, 303, 307, 308) and loc is not None:
            return self._redirect(loc.decode())
        if status == 416:
            raise FetchError(E_RANGE, "416 at %d" % self._want)
        if status not in (200, 206):
            raise FetchError(E_HTTP, status)
        if te is not None and te.lower() != b"identity":
            raise FetchError(E_ENCODING, te.decode())
        length = None
        if clen is not None:
            try:
                length = int(clen)
            except ValueError:
                raise FetchError(E_HEADER, "content-length")
            if length < 0:
                raise FetchError(E_HEADER, "content-length")
        validator = etag or lastmod
        validator = validator.decode() if validator else None
        self._skip = 0
        self._restart = False
        if status == 206:
            start, end, total = _content_range(crange)
            if start != self._want:
                raise FetchError(E_RANGE, "got %d, asked %d" % (start, self._want))
            if length is not None and length != end - start + 1:
                raise FetchError(E_RANGE, "length %d != range" % length)
            if total is not None and end >= total:
                raise FetchError(E_RANGE, "end past total")
            if self._want and self.etag and validator and validator != self.etag:
                # the server ignored If-Range: these bytes belong to another file
                raise FetchError(E_CHANGED, "validator %s, resumed from %s" % (validator, self.etag))
            self.total = total
            self._end = end + 1
            self._body_pos = start
        else:
            # the whole resource from byte 0: skip what we already have, or
            # start over when the validator says the file changed
            if self._want and self.etag and validator and validator != self.etag:
                self.pos = 0
                self._restart = True
            else:
                self._skip = self._want
            if length is not None and length < self._skip:
                raise FetchError(E_RANGE, "whole file shorter than offset")
            self.total = length
            self._end = length
            self._body_pos = 0
        limit = self.limit
        if limit is not None:
            if self.total is not None and self.total > limit:
                raise FetchError(E_TOO_BIG, "size %d > %d" % (self.total, limit))
            if self._end is not None and self._end > limit:
                raise FetchError(E_TOO_BIG, "end %d > %d" % (self._end, limit))
        if validator:
            self.etag = validator
        self._pending_n = 0
        self._state = _BODY

    def _redirect(self, loc):
        self._redirects += 1
        if self._redirects > self.max_redirects:
            raise FetchError(E_REDIRECT, "too many")
        if loc.startswith("/"):
            tls, host, port, _ = self._target
            loc = "%s://%s:%d%s" % ("https" if tls else "http", host, port, loc)
        try:
            target = parse_url(loc)
        except FetchError:
            raise FetchError(E_REDIRECT, "bad location")
        if (target[0], target[1], target[2]) not in self.origins:
            raise FetchError(E_REDIRECT, "%s://%s:%d not allowed" % (
                "https" if target[0] else "http", target[1], target[2]))
        want, limit, etag, n = self._want, self.limit, self.etag, self._redirects
        self.close()
        self._target = target
        self._want, self.limit, self.etag, self._redirects = want, limit, etag, n
        self._begin()

    def _body(self):
        n = self._pending_n
        if n:
            self._pending_n = 0
            return self._deliver(self._pending, n)
        n = self._read(self._mv)
        if n is None:
            return 0
        if n == 0:
            return self._check_end(True)
        return self._deliver(0, n)

    def _deliver(self, off, n):
        self.received += n
        end = self._end
        # bytes past the declared end are not part of the response: drop them
        if end is not None and self._body_pos + n > end:
            n = end - self._body_pos
        self._body_pos += n
        if self._skip:
            k = self._skip if self._skip < n else n
            self._skip -= k
            off += k
            n -= k
        if n <= 0:
            return self._check_end(False)
        limit = self.limit
        if limit is not None and self.pos + n > limit:
            raise FetchError(E_TOO_BIG, "%d > %d" % (self.pos + n, limit))
        self.pos += n
        self.chunk = self._mv[off:off + n]
        if end is not None and self._body_pos >= end:
            self._finish()
        return n

    def _check_end(self, eof):
        end = self._end
        if end is not None and self._body_pos >= end:
            self._finish()
            return DONE
        if eof:
            if end is None:
                self._finish()
                return DONE
            raise FetchError(E_CLOSED, "at %d of %d" % (self._body_pos, end))
        return 0

    def _finish(self):
        s = self._sock
        self._sock = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self._state = _DONE


def _content_range(v):
    # b"bytes START-END/TOTAL" (TOTAL may be "*")
    if v is None or not v.startswith(b"bytes "):
        raise FetchError(E_RANGE, "no Content-Range")
    try:
        rng, _, total = v[6:].partition(b"/")
        a, _, b = rng.partition(b"-")
        start, end = int(a), int(b)
        total = None if total.strip() == b"*" else int(total)
    except ValueError:
        raise FetchError(E_RANGE, "bad Content-Range")
    if end < start:
        raise FetchError(E_RANGE, "bad Content-Range")
    return start, end, total
