# A small WebSocket client (RFC 6455) for the OCPP link, driven by a bounded,
# non-blocking pump like the MQTT link: poll(now_ms) does a few socket reads
# and one write and returns; nothing here ever waits on the network.
#
#   ws = WS()
#   ws.open(url, path, now_ms, protocol="ocpp1.6", auth=b"id:key", ca=der)
#   msg = ws.poll(now_ms)     # a complete text message (bytes) or None
#   ws.send(text)             # queued (masked) for the next polls
#   ws.state, ws.error        # "closed"|"tcp"|"http"|"open", last failure
#   ws.fail                   # what kind of failure: "cert" (the server's TLS
#                             # certificate did not verify), "auth" (upgrade
#                             # refused 401/403), "memory", or None
#
# Failures (refused, timeouts, bad upgrade, protocol errors, closed by the
# server) close the socket and raise WSError from poll(); the caller decides
# when to open again. Incoming frames are reassembled in one preallocated
# buffer; a message larger than it is discarded (counted in `oversize`).
# Fragmented messages are refused (OCPP servers send whole text frames).
import time
import errno
import socket
import select
import os
from micropython import const

_CLOSED = const(0)
_TCP = const(1)
_HTTP = const(2)
_OPEN = const(3)
STATES = ("closed", "tcp", "http", "open")

_CONNECT_MS = const(10000)    # TCP + TLS + HTTP upgrade
_STALL_MS = const(10000)      # pending output making no progress
_IN_MAX = const(4096)         # largest incoming message kept
_OUT_MAX = const(8192)
_CHUNK = const(1024)
_READS = const(4)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WSError(Exception):
    pass


def parse_url(url):
    """'ws://host[:port][/path]' -> (tls, host, port, path); ValueError if bad."""
    if type(url) is not str:
        raise ValueError("url must be a string")
    if url.startswith("ws://"):
        tls, rest, port = False, url[5:], 80
    elif url.startswith("wss://"):
        tls, rest, port = True, url[6:], 443
    else:
        raise ValueError("url must start with ws:// or wss://")
    i = rest.find("/")
    hp, path = (rest, "") if i < 0 else (rest[:i], rest[i:])
    host = hp
    if hp.startswith("["):
        raise ValueError("IPv6 literals are not supported")
    if ":" in hp:
        host, p = hp.rsplit(":", 1)
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise ValueError("bad port in url")
        port = int(p)
    if not host or " " in url or "?" in path or "#" in path:
        raise ValueError("bad host or path in url")
    return tls, host, port, path.rstrip("/")


def accept_key(key):
    import hashlib
    import binascii
    return binascii.b2a_base64(hashlib.sha1(key + _GUID).digest())[:-1]


class WS:
    def __init__(self, in_max=_IN_MAX):
        self.state_id = _CLOSED
        self.error = None
        self.fail = None
        self.oversize = 0          # incoming messages discarded as too large
        self.rx_ms = None          # last byte received (ticks ms)
        self.pongs = 0
        self._sock = None
        self._poll = None
        self._ibuf = bytearray(in_max)
        self._imv = memoryview(self._ibuf)
        self._ilen = 0
        self._skip = 0
        self._out = bytearray()
        self._t0 = 0
        self._t_prog = 0
        self._key = None
        self._host = None
        self._req = None
        self._proto = None

    @property
    def state(self):
        return STATES[self.state_id]

    @property
    def is_open(self):
        return self.state_id == _OPEN

    def pending(self):
        return len(self._out)

    # ---- opening ------------------------------------------------------------
    def open(self, url, path, now_ms, protocol=None, auth=None, ca=None, addr=None):
        """Start connecting to url + path (non-blocking). auth: b'user:pass'
        for HTTP Basic; ca: DER CA certificate or a list of them, the trust
        anchors (wss:// needs one; one that TLS cannot read is skipped)."""
        self.close()
        tls, host, port, base = parse_url(url)
        if tls and not ca:
            raise WSError("wss:// needs a CA certificate")
        if isinstance(ca, (bytes, bytearray)):
            ca = (ca,)
        import binascii
        self._key = binascii.b2a_base64(os.urandom(16))[:-1]
        self._proto = protocol
        req = b"GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
              b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (
                  base.encode(), path.encode(), host.encode(), port, self._key)
        if protocol:
            req += b"Sec-WebSocket-Protocol: %s\r\n" % protocol.encode()
        if auth:
            req += b"Authorization: Basic %s\r\n" % binascii.b2a_base64(auth)[:-1]
        self._req = req + b"\r\n"
        self._host = host
        if addr is None:
            addr = socket.getaddrinfo(host, port)[0][-1]   # immediate for an IP literal
        s = socket.socket()
        self._sock = s
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            if e.errno not in (errno.EINPROGRESS, errno.EAGAIN):
                self.close()
                raise
        p = select.poll()
        p.register(s, select.POLLOUT)
        self._poll = p
        self._ctx = None
        if tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED
            for d in ca:
                try:
                    ctx.load_verify_locations(cadata=d)
                except ValueError:
                    pass     # one TLS cannot read: skipped (trusts less; none: no server verifies)
            self._ctx = ctx
        self._t0 = self._t_prog = now_ms
        self._ilen = self._skip = 0
        self._out[:] = b""
        self.error = None
        self.fail = None
        self.state_id = _TCP

    def close(self, code=None):
        """Close now; with a code a close frame is attempted first (best effort)."""
        s = self._sock
        if s is not None and code is not None and self.state_id == _OPEN:
            try:
                self._frame(0x8, bytes((code >> 8, code & 0xFF)))
                s.write(self._out)
            except Exception:
                pass
        self._sock = None
        self._poll = None
        self.state_id = _CLOSED
        self._out[:] = b""
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    def _fail(self, why, kind=None):
        self.error = why
        self.fail = kind
        self.close()
        raise WSError(why)

    # ---- pump -----------------------------------------------------------------
    def poll(self, now_ms):
        """Bounded work; returns one complete text message (bytes) or None."""
        st = self.state_id
        if st == _CLOSED:
            return None
        try:
            if st == _TCP:
                ev = self._poll.poll(0)
                if not ev:
                    if time.ticks_diff(now_ms, self._t0) >= _CONNECT_MS:
                        self._fail("TCP connect timeout")
                    return None
                if ev[0][1] & (select.POLLERR | select.POLLHUP):
                    self._fail("connection refused")
                self._poll = None
                if self._ctx is not None:
                    self._sock = self._ctx.wrap_socket(self._sock, server_hostname=self._host,
                                                       do_handshake_on_connect=False)
                    self._ctx = None
                self._out[:] = self._req
                self._req = None
                self._t_prog = now_ms
                self.state_id = _HTTP
            self._flush(now_ms)
            msg = self._read(now_ms)
            if self.state_id == _HTTP and time.ticks_diff(now_ms, self._t0) >= _CONNECT_MS:
                self._fail("no WebSocket upgrade within %d ms" % _CONNECT_MS)
            return msg
        except WSError:
            raise
        except MemoryError:
            self._fail("out of memory", "memory")
        except OSError as e:
            n = e.args[0] if e.args else 0
            if type(n) is int and n < 0:
                # -9984: MBEDTLS_ERR_X509_CERT_VERIFY_FAILED
                self._fail("TLS error %d" % n, "cert" if n == -9984 else None)
            self._fail("socket error %s" % (errno.errorcode.get(n, n) if type(n) is int else n))
        except ValueError as e:   # the ssl module's certificate verification failure
            self._fail("TLS: " + " ".join(str(e).split()), "cert")

    def _flush(self, now):
        out = self._out
        if not out:
            self._t_prog = now
            return
        n = self._sock.write(memoryview(out)[:_CHUNK])
        if n:
            out[0:n] = b""
            self._t_prog = now
        elif time.ticks_diff(now, self._t_prog) >= _STALL_MS:
            self._fail("send stalled for %d ms" % _STALL_MS)

    def _read(self, now):
        s = self._sock
        buf = self._ibuf
        for _ in range(_READS):
            if self._skip:
                room = min(self._skip, len(buf))
                n = s.readinto(self._imv[:room])
                if n is None:
                    return None
                if n == 0:
                    self._fail("closed by server")
                self._skip -= n
                self.rx_ms = now
                continue
            free = len(buf) - self._ilen
            if free > 0:
                n = s.readinto(self._imv[self._ilen:])
                if n is None:
                    n = -1
                elif n == 0:
                    self._fail("closed by server")
                else:
                    self._ilen += n
                    self.rx_ms = now
            else:
                n = -1
            if self.state_id == _HTTP:
                self._upgrade()
                if self.state_id != _OPEN:
                    if n < 0:
                        return None
                    continue
            msg = self._frames()
            if msg is not None or n < 0:
                return msg
        return None

    def _upgrade(self):
        buf = self._ibuf
        end = bytes(self._imv[:self._ilen]).find(b"\r\n\r\n")
        if end < 0:
            if self._ilen >= len(buf):
                self._fail("HTTP response too large")
            return
        head = bytes(self._imv[:end]).split(b"\r\n")
        st = head[0].split(b" ")
        if len(st) < 2 or st[1] != b"101":
            self._fail("upgrade refused: " + head[0].decode(),
                       "auth" if len(st) > 1 and st[1] in (b"401", b"403") else None)
        hdr = {}
        for line in head[1:]:
            k, _, v = line.partition(b":")
            hdr[k.strip().lower()] = v.strip()
        if hdr.get(b"upgrade", b"").lower() != b"websocket" or \
                b"upgrade" not in hdr.get(b"connection", b"").lower():
            self._fail("not a WebSocket upgrade")
        if hdr.get(b"sec-websocket-accept") != accept_key(self._key):
            self._fail("bad Sec-WebSocket-Accept")
        if self._proto is not None and hdr.get(b"sec-websocket-protocol") != self._proto.encode():
            self._fail("server did not accept subprotocol %s" % self._proto)
        rest = self._ilen - end - 4
        if rest:
            buf[0:rest] = self._imv[end + 4:self._ilen]
        self._ilen = rest
        self.state_id = _OPEN

    def _frames(self):
        # one complete text message out of the buffer, control frames answered
        buf = self._ibuf
        while self._ilen >= 2:
            b0 = buf[0]
            b1 = buf[1]
            if b1 & 0x80:
                self._fail("masked frame from server")
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if self._ilen < 4:
                    return None
                ln = buf[2] << 8 | buf[3]
                h = 4
            elif ln == 127:
                if self._ilen < 10:
                    return None
                if buf[2] or buf[3] or buf[4] or buf[5] or buf[6] & 0x80:
                    self._fail("frame too large")
                ln = buf[6] << 24 | buf[7] << 16 | buf[8] << 8 | buf[9]
                h = 10
            op = b0 & 0x0F
            total = h + ln
            if total > len(buf):
                if op >= 0x8:
                    self._fail("control frame too large")
                self.oversize += 1
                self._skip = total - self._ilen
                self._ilen = 0
                return None
            if self._ilen < total:
                return None
            msg = None
            if not b0 & 0x80 or op == 0:
                self._fail("fragmented messages are not supported")
            if op == 0x1:
                msg = bytes(self._imv[h:total])
            elif op == 0x9:   # ping -> pong with the same payload
                self._frame(0xA, self._imv[h:total])
            elif op == 0xA:
                self.pongs += 1
            elif op == 0x8:
                code = buf[h] << 8 | buf[h + 1] if ln >= 2 else 1005
                self._fail("closed by server (%d)" % code)
            else:
                self._fail("unexpected opcode %d" % op)
            rest = self._ilen - total
            if rest:
                buf[0:rest] = self._imv[total:self._ilen]
            self._ilen = rest
            if msg is not None:
                return msg
        return None

    # ---- sending ------------------------------------------------------------------
    def send(self, data):
        """Queue a text message (str or bytes). WSError when not open or the
        output buffer is full."""
        if self.state_id != _OPEN:
            raise WSError("not open")
        if type(data) is str:
            data = data.encode()
        self._frame(0x1, data)

    def ping(self, data=b""):
        if self.state_id == _OPEN:
            self._frame(0x9, data)

    def _frame(self, op, data):
        n = len(data)
        out = self._out
        if len(out) + n + 14 > _OUT_MAX:
            raise WSError("output buffer full")
        out.append(0x80 | op)
        if n < 126:
            out.append(0x80 | n)
        elif n < 65536:
            out.append(0x80 | 126)
            out.append(n >> 8)
            out.append(n & 0xFF)
        else:
            raise WSError("message too large")
        m = os.urandom(4)
        out.extend(m)
        i = len(out)
        out.extend(data)
        for j in range(n):   # client-to-server masking (RFC 6455 5.3)
            out[i + j] ^= m[j & 3]
