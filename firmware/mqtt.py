# MQTT link to the backend: umqtt.simple driven through a bounded,
# non-blocking socket pump, so that nothing the network does (broker down,
# unreachable, slow TLS, accepting but never reading) can hold the control
# loop for more than a few milliseconds.
#
# umqtt.simple (lib/, untouched) encodes and decodes the packets: it talks to
# a _Pipe, an in-memory stand-in for its socket. poll() moves bytes between
# the pipe and the real non-blocking socket, and hands umqtt an incoming
# PUBLISH only once the whole packet is in memory, so umqtt never waits.
# Topics, payloads and the reconnect policy: docs/mqtt.md.
import time
import errno
import socket
import select
import sys
from micropython import const
from umqtt.simple import MQTTClient

_IDLE = const(0)      # disconnected, waiting for the next attempt
_TCP = const(1)       # TCP connect in progress
_CONNACK = const(2)   # CONNECT sent (TLS handshake included), waiting for CONNACK
_UP = const(3)        # connected

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_CONNECT_TIMEOUT_MS = const(10000)   # TCP + TLS + CONNACK
_STALL_MS = const(10000)             # pending output making no progress
_IN_MAX = const(2304)                # largest incoming packet kept whole: a command of
                                     # commands.MAX_PAYLOAD (2048) + topic and header
_OBUF_LOW = const(1024)              # feed the pipe while less than this is pending
_OBUF_MAX = const(8192)
_CHUNK = const(1024)                 # bytes per socket write
_READS = const(4)                    # socket reads per poll
_FEED = const(4)                     # messages moved into the pipe per poll
_QUEUE_MAX = const(16)               # non-retained messages waiting
_RETAINED_MAX = const(8)             # retained topics remembered

STATES = ("idle", "connecting", "connack", "up")
_CONNACK_TEXT = {1: "unacceptable protocol version", 2: "client id rejected",
                 3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}
WILL = b'{"online": false}'


class _Dead(Exception):
    pass


def _rand():
    import random
    return random.getrandbits(16) / 65536


def pem_to_der(data):
    """A PEM certificate (first one) -> DER bytes; DER is returned as is."""
    if not data.startswith(b"-----BEGIN"):
        return data
    import binascii
    body = data[data.find(b"\n") + 1:data.find(b"-----END")]
    return binascii.a2b_base64(body.replace(b"\r", b"").replace(b"\n", b""))


class _Pipe:
    # What umqtt sees as its socket: writes are buffered (sent by Link.poll),
    # reads come from the completed incoming packet that Link hands over.
    def __init__(self):
        self.out = bytearray()
        self.inb = None
        self.pos = 0
        self.lim = 0

    def write(self, buf, n=None):
        if n is not None:
            buf = memoryview(buf)[:n]
        if len(self.out) + len(buf) > _OBUF_MAX:
            raise OSError(105)  # ENOBUFS: treated as a dead connection
        self.out.extend(buf)
        return len(buf)

    def read(self, n):
        p = self.pos
        if self.inb is None or p >= self.lim:
            return None
        e = min(p + n, self.lim)
        self.pos = e
        return bytes(self.inb[p:e])

    def setblocking(self, flag):
        pass

    def close(self):
        pass


class _Client(MQTTClient):
    # umqtt with its socket replaced by the pipe; connect/subscribe/QoS 1
    # publish are sent without waiting (the acks are handled by Link).

    def send_connect(self):
        user = self.user
        sz = 10 + 2 + len(self.client_id)
        flags = 0x02  # clean session
        if self.lw_topic:
            sz += 4 + len(self.lw_topic) + len(self.lw_msg)
            flags |= 0x04 | (self.lw_qos & 3) << 3 | self.lw_retain << 5
        if user is not None:
            sz += 2 + len(user)
            flags |= 0x80
            if self.pswd is not None:
                sz += 2 + len(self.pswd)
                flags |= 0x40
        self._fixed(0x10, sz)
        self.sock.write(b"\x00\x04MQTT\x04")
        self.sock.write(bytes((flags, self.keepalive >> 8, self.keepalive & 0xFF)))
        self._send_str(self.client_id)
        if self.lw_topic:
            self._send_str(self.lw_topic)
            self._send_str(self.lw_msg)
        if user is not None:
            self._send_str(user)
            if self.pswd is not None:
                self._send_str(self.pswd)

    def _fixed(self, op, sz):
        hdr = bytearray(5)
        hdr[0] = op
        i = 1
        while sz > 0x7F:
            hdr[i] = (sz & 0x7F) | 0x80
            sz >>= 7
            i += 1
        hdr[i] = sz
        self.sock.write(hdr, i + 1)

    def send_subscribe(self, topic, pid):
        self._fixed(0x82, 2 + 2 + len(topic) + 1)
        self.sock.write(bytes((pid >> 8, pid & 0xFF)))
        self._send_str(topic)
        self.sock.write(b"\x00")

    def publish1(self, topic, msg, pid, retain=False, dup=False):
        self._fixed(0x32 | retain | dup << 3, 2 + len(topic) + 2 + len(msg))
        self._send_str(topic)
        self.sock.write(bytes((pid >> 8, pid & 0xFF)))
        self.sock.write(msg)


def _b(x):
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode()
    import json
    return json.dumps(x).encode()


def _why(e, tls):
    if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
        n = e.args[0]
        if n < 0 and tls:   # Mbed TLS error code
            return "TLS error %d%s" % (n, _TLS_TEXT.get(n, ""))
        return "socket error %s" % errno.errorcode.get(n, n)
    return "%s: %s" % (type(e).__name__, " ".join(str(e).split()))


_TLS_TEXT = {-9984: " (certificate verification failed)", -30592: " (fatal alert from broker)",
             -29312: " (connection closed during handshake)"}


class Link:
    """The device's MQTT connection. Call poll(now_ms) from the loop; it
    returns after a bounded amount of work whatever the network does."""

    def __init__(self, cfg_mqtt, device_id, now_ms, rand=None, will=None):
        self.cfg = cfg_mqtt
        self.will = will or WILL     # the offline status (the agent adds version and slot)
        self.device_id = device_id
        self.prefix = b"evse/" + device_id.encode() + b"/"
        self.on_message = None       # fn(name, payload_bytes) for cmd/<name>
        self.session_log = None      # SessionLog: published on 'session', QoS 1, acked on PUBACK
        self.connected = False
        self.last_error = None
        self.attempts = 0            # connection attempts started
        self.failures = 0            # consecutive failed/dropped connections
        self.backoff_ms = 0          # last delay chosen
        self.retry_at = now_ms       # next attempt (ticks ms)
        self.dropped = 0             # queued messages dropped because the queue was full
        self.sent = 0                # messages written to the socket
        self._rand = rand or _rand
        self._st = _IDLE
        self._sock = None
        self._poller = None
        self._ctx = None
        self._addr = None
        self._pipe = _Pipe()
        self._ibuf = bytearray(_IN_MAX)
        self._imv = memoryview(self._ibuf)
        self._rbuf = bytearray(256)
        self._ilen = 0
        self._skip = 0               # bytes of an oversize packet still to discard
        self._queue = []             # [suffix, payload, qos]
        self._retained = {}          # suffix -> payload (latest only)
        self._dirty = []             # retained suffixes to (re)send
        self._inflight = None        # (pid, 'log', seq) or (pid, 'q', item)
        self._pid = 0
        self._sub_pid = 0
        self.ups = 0                 # successful connections (CONNACK) so far
        self.resuming = False        # suspend()ed, not yet connected again
        self._extra = None           # (topic, fn(payload)): one more subscription (HA birth)
        self.extra_refused = False
        cid = cfg_mqtt.get("client_id") or device_id
        user = cfg_mqtt.get("user")
        pw = cfg_mqtt.get("password")
        c = _Client(_b(cid), cfg_mqtt.get("host") or "127.0.0.1", cfg_mqtt.get("port") or 0,
                     None if user is None else _b(user), None if pw is None else _b(pw),
                     int(cfg_mqtt.get("keepalive") or 60), bool(cfg_mqtt.get("tls")))
        c.set_last_will(self.prefix + b"status", self.will, retain=True, qos=1)
        c.set_callback(self._on_publish)
        c.sock = self._pipe
        self._c = c
        self._ka_ms = c.keepalive * 1000
        self._t_conn = self._t_tx = self._t_rx = self._t_prog = now_ms
        self._ping_at = None

    # ---- public -----------------------------------------------------------

    @property
    def state(self):
        return STATES[self._st]

    def publish(self, suffix, payload, retain=False, qos=0):
        """Queue a message for evse/<id>/<suffix>. Retained topics keep only
        their latest payload and are re-sent on every (re)connect; other
        messages wait in a bounded FIFO (oldest dropped when full).
        payload: bytes, str, or an object to be JSON-encoded."""
        payload = _b(payload)
        if retain:
            if suffix not in self._retained and len(self._retained) >= _RETAINED_MAX:
                raise ValueError("too many retained topics")
            self._retained[suffix] = payload
            if suffix not in self._dirty:
                self._dirty.append(suffix)
            return
        if len(self._queue) >= _QUEUE_MAX:
            for i in range(len(self._queue)):
                it = self._queue[i]
                if self._inflight is None or self._inflight[2] is not it:
                    self._queue.pop(i)
                    break
            self.dropped += 1
        self._queue.append([suffix, payload, 1 if qos else 0])

    def subscribe_extra(self, topic, fn):
        """Also subscribe to `topic` (outside evse/<id>/) on every connect;
        fn(payload_bytes) gets its messages. A refusal by the broker is only
        recorded (extra_refused): the link stays up for its own topics."""
        self._extra = (_b(topic), fn)

    def send_now(self, topic, payload, retain=False):
        """Publish on a full `topic` (QoS 0) straight into the output buffer
        when connected and it has room: True, else False (try again later).
        Nothing is kept for a reconnect: the caller re-sends."""
        if self._st != _UP or len(self._pipe.out) >= _OBUF_LOW:
            return False
        self._c.publish(_b(topic), _b(payload), retain, 0)
        self.sent += 1
        return True

    def suspend(self, now_ms):
        """Close the connection and give the receive and send buffers back
        (the install step of an update); the next poll() reconnects, and
        `resuming` stays True until it is up again (the agent's reset waits
        for the messages queued meanwhile, within its delay)."""
        was = self._st
        self._close()
        self._st = _IDLE
        inf = self._inflight
        self._inflight = None
        if inf is not None and inf[1] == "q":
            inf[2][2] = 1   # stays queued, re-sent after reconnect
        self._ibuf = self._imv = None
        self._pipe.out = bytearray()
        self._ilen = self._skip = 0
        if was != _IDLE:
            self.retry_at = now_ms   # it was (getting) up: again at once, no backoff
            self.resuming = True

    def pending(self):
        """Messages or bytes not yet handed to the network (0 = all flushed)."""
        return len(self._queue) + len(self._dirty) + len(self._pipe.out)

    def poll(self, now_ms):
        try:
            st = self._st
            if st == _IDLE:
                if time.ticks_diff(now_ms, self.retry_at) >= 0:
                    self._start(now_ms)
                return
            if st == _TCP:
                self._tcp(now_ms)
                if self._st != _CONNACK:
                    return
            self._io(now_ms)
            if self._st == _CONNACK:
                if time.ticks_diff(now_ms, self._t_conn) >= _CONNECT_TIMEOUT_MS:
                    raise _Dead("no CONNACK within %d ms" % _CONNECT_TIMEOUT_MS)
            elif self._st == _UP:
                self._keepalive(now_ms)
                self._feed()
                self._flush(now_ms)
        except _Dead as e:
            self._drop(now_ms, e.args[0])
        except Exception as e:  # noqa - any failure: close, back off, keep the loop running
            self._drop(now_ms, _why(e, self._ctx is not None))

    def close(self, now_ms=None):
        """Best effort clean shutdown: retained offline status, DISCONNECT."""
        if self._st == _UP:
            try:
                self._c.publish(self.prefix + b"status", self.will, True, 0)
                self._c.sock.write(b"\xe0\x00")
                self._flush(now_ms if now_ms is not None else self._t_tx)
            except Exception:
                pass
        self._close()
        self._st = _IDLE

    # ---- connection -------------------------------------------------------

    def _start(self, now):
        if self._ibuf is None:   # after suspend()
            self._ibuf = bytearray(_IN_MAX)
            self._imv = memoryview(self._ibuf)
        self.attempts += 1
        self._t_conn = now
        cfg = self.cfg
        port = self._c.port
        if self._addr is None:
            # blocking DNS lookup: immediate for an IP literal; cached afterwards
            self._addr = socket.getaddrinfo(self._c.server, port)[0][-1]
        if cfg.get("tls") and self._ctx is None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED
            ca = cfg.get("ca")
            if not ca:
                raise _Dead("tls needs a CA certificate (mqtt.ca)")
            with open(ca, "rb") as f:
                ctx.load_verify_locations(cadata=pem_to_der(f.read()))
            cert = cfg.get("cert")
            if cert:   # client certificate (broker with require_certificate): DER or PEM
                with open(cert, "rb") as f:
                    cert = pem_to_der(f.read())
                with open(cfg.get("key") or "", "rb") as f:
                    key = f.read()
                ctx.load_cert_chain(cert, key)
                cert = key = None
            self._ctx = ctx
        s = socket.socket()
        self._sock = s
        s.setblocking(False)
        try:
            s.connect(self._addr)
        except OSError as e:
            if e.errno not in (errno.EINPROGRESS, errno.EAGAIN):
                raise
        p = select.poll()
        p.register(s, select.POLLOUT)
        self._poller = p
        self._st = _TCP

    def _tcp(self, now):
        ev = self._poller.poll(0)
        if not ev:
            if time.ticks_diff(now, self._t_conn) >= _CONNECT_TIMEOUT_MS:
                raise _Dead("TCP connect timeout")
            return
        if ev[0][1] & (select.POLLERR | select.POLLHUP):
            raise _Dead("connection refused")
        self._poller = None
        if self._ctx is not None:
            self._sock = self._ctx.wrap_socket(self._sock, server_hostname=self._c.server,
                                               do_handshake_on_connect=False)
        pipe = self._pipe
        pipe.out[:] = b""
        pipe.inb = None
        self._ilen = 0
        self._skip = 0
        self._ping_at = None
        self._c.send_connect()
        self._t_prog = now
        self._st = _CONNACK

    def _drop(self, now, why):
        self.last_error = why
        self._close()
        self._st = _IDLE
        self.connected = False
        self.failures += 1
        d = _BACKOFF_MIN_MS << min(self.failures - 1, 6)
        if d > _BACKOFF_MAX_MS:
            d = _BACKOFF_MAX_MS
        d = d // 2 + int(self._rand() * (d // 2))   # jitter: [d/2, d)
        if d < _BACKOFF_MIN_MS:
            d = _BACKOFF_MIN_MS
        self.backoff_ms = d
        self.retry_at = time.ticks_add(now, d)
        inf = self._inflight
        self._inflight = None
        if inf is not None and inf[1] == "q":
            inf[2][2] = 1   # stays queued, re-sent after reconnect

    def _close(self):
        s = self._sock
        self._sock = None
        self._poller = None
        self.connected = False
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    # ---- bytes in / out ---------------------------------------------------

    def _io(self, now):
        self._flush(now)
        s = self._sock
        rb = self._rbuf
        for _ in range(_READS):
            n = s.readinto(rb)
            if n is None:
                break
            if n == 0:
                raise _Dead("closed by broker")
            self._t_rx = now
            self._ping_at = None
            i = 0
            while i < n:
                if self._skip:
                    k = min(n - i, self._skip)
                    self._skip -= k
                    i += k
                    continue
                k = min(n - i, _IN_MAX - self._ilen)
                if k <= 0:
                    raise _Dead("input overflow")
                self._ibuf[self._ilen:self._ilen + k] = memoryview(rb)[i:i + k]
                self._ilen += k
                i += k
                self._packets(now)
            if n < len(rb):
                break

    def _flush(self, now):
        out = self._pipe.out
        if not out:
            self._t_prog = now
            return
        n = self._sock.write(memoryview(out)[:_CHUNK])
        if n:
            out[0:n] = b""
            if not out and n > 256:
                self._pipe.out = bytearray()   # a bytearray keeps its largest size: give it back
            self._t_prog = now
            self._t_tx = now
        elif time.ticks_diff(now, self._t_prog) >= _STALL_MS:
            raise _Dead("send stalled for %d ms" % _STALL_MS)

    def _packets(self, now):
        buf = self._ibuf
        pos = 0
        while True:
            avail = self._ilen - pos
            if avail < 2:
                break
            rl = 0
            sh = 0
            i = pos + 1
            while True:
                if i >= self._ilen:
                    rl = -1
                    break
                b = buf[i]
                rl |= (b & 0x7F) << sh
                i += 1
                if not b & 0x80:
                    break
                sh += 7
                if sh > 21:
                    raise _Dead("bad packet length")
            if rl < 0:
                break
            total = i - pos + rl
            op = buf[pos] & 0xF0
            if total > _IN_MAX:
                if pos > 0 or avail < _IN_MAX:
                    break   # first compact, then fill the buffer
                self._oversize(i, total)
                pos = _IN_MAX
                break
            if avail < total:
                break
            self._packet(op, pos, i, total)
            pos += total
        if pos:
            rest = self._ilen - pos
            if rest > 0:
                buf[0:rest] = self._imv[pos:self._ilen]
            self._ilen = rest

    def _packet(self, op, pos, body, total):
        buf = self._ibuf
        if op == 0x30:   # PUBLISH: umqtt decodes it from the pipe and calls back
            p = self._pipe
            p.inb = buf
            p.pos = pos
            p.lim = pos + total
            self._c.wait_msg()
            p.inb = None
        elif op == 0x20:   # CONNACK
            rc = buf[body + 1]
            if rc:
                raise _Dead("refused by broker: " + _CONNACK_TEXT.get(rc, "code %d" % rc))
            self._up()
        elif op == 0x90:   # SUBACK
            if buf[body + 2] & 0x80:
                if (buf[body] << 8 | buf[body + 1]) != self._sub_pid:
                    self.extra_refused = True   # not ours to die for
                else:
                    raise _Dead("subscription refused")
        elif op == 0x40:   # PUBACK
            pid = buf[body] << 8 | buf[body + 1]
            inf = self._inflight
            if inf is not None and inf[0] == pid:
                self._inflight = None
                if inf[1] == "log":
                    self.session_log.ack(inf[2])
                else:
                    try:
                        self._queue.remove(inf[2])
                    except ValueError:
                        pass
        # PINGRESP and anything else: liveness only

    def _oversize(self, body, total):
        # a PUBLISH larger than the input buffer: deliver its head (the
        # command handler refuses it as too large), discard the rest
        buf = self._ibuf
        tl = buf[body] << 8 | buf[body + 1]
        t0 = body + 2
        q = (buf[0] >> 1) & 3
        m0 = t0 + tl + (2 if q else 0)
        self._skip = total - _IN_MAX
        if m0 < _IN_MAX:
            self._on_publish(bytes(buf[t0:t0 + tl]), bytes(buf[m0:_IN_MAX]))

    def _on_publish(self, topic, msg):
        pre = self.prefix
        if not (topic.startswith(pre) and topic[len(pre):len(pre) + 4] == b"cmd/"):
            ex = self._extra
            if ex is not None and topic == ex[0]:
                try:
                    ex[1](msg)
                except Exception as e:
                    sys.print_exception(e)
            return
        fn = self.on_message
        if fn is None:
            return
        try:
            fn(topic[len(pre) + 4:].decode(), msg)
        except Exception as e:  # a handler bug must not take the link down
            sys.print_exception(e)

    def _up(self):
        self._st = _UP
        self.connected = True
        self.resuming = False
        self.failures = 0
        self.last_error = None
        self._sub_pid = self._next_pid()
        self._c.send_subscribe(self.prefix + b"cmd/+", self._sub_pid)
        self.ups += 1
        if self._extra is not None:
            self._c.send_subscribe(self._extra[0], self._next_pid())
        for k in self._retained:
            if k not in self._dirty:
                self._dirty.append(k)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _keepalive(self, now):
        if not self._ka_ms:
            return
        if self._ping_at is not None:
            if time.ticks_diff(now, self._ping_at) >= max(self._ka_ms // 2, 5000):
                raise _Dead("no PINGRESP")
        elif time.ticks_diff(now, self._t_tx) >= self._ka_ms // 2 or \
                time.ticks_diff(now, self._t_rx) >= self._ka_ms:
            self._c.ping()
            self._ping_at = now
            self._t_tx = now

    def _feed(self):
        c = self._c
        p = self._pipe
        pre = self.prefix
        for _ in range(_FEED):
            if len(p.out) >= _OBUF_LOW:
                return
            if self._dirty:
                k = self._dirty.pop(0)
                c.publish(pre + k.encode(), self._retained[k], True, 0)
            elif self._inflight is None and self.session_log is not None and len(self.session_log):
                head = self.session_log.peek_line()
                if head is None:
                    return
                pid = self._next_pid()
                c.publish1(pre + b"session", head[1], pid)
                self._inflight = (pid, "log", head[0])
            else:
                item = None
                for it in self._queue:
                    if it[2] == 0 or (it[2] == 1 and self._inflight is None):
                        item = it
                        break
                if item is None:
                    return
                if item[2]:
                    pid = self._next_pid()
                    c.publish1(pre + item[0].encode(), item[1], pid)
                    item[2] = 2   # in flight: stays queued until PUBACK
                    self._inflight = (pid, "q", item)
                else:
                    self._queue.remove(item)
                    c.publish(pre + item[0].encode(), item[1], False, 0)
            self.sent += 1
