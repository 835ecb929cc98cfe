"""Stand-in chargers for tests, the demo and the rollout bench (CPython).

Many lightweight devices per process, each with its OWN MQTT connection
(MQTT 3.1.1, clean session, last will `{"online": false, "version": ...,
"slot": ...}` retained on `evse/<id>/status`), speaking the device protocol of docs/mqtt.md exactly:
retained `status`, `state` and `firmware`, `reply` once per command with an
`id`, commands on `evse/<id>/cmd/+` (`update_firmware`, `set_config`,
`get_config`; anything else is answered `unknown command`). Updates follow
docs/ota.md: Downloading (progress) -> Downloaded -> SignatureVerified ->
[InstallScheduled while a charging session runs or outside the install
window] -> Installing -> InstallRebooting -> reboot (clean disconnect, the
new version on trial) -> Installed (requestId null, as health.settle reports
it) and status trial false; or a rollback: reboot into the old version with
`failed_version` and InstallationFailed (with the requestId and the reason).

No paho here: a minimal asyncio MQTT client keeps 10,000 devices in one
process cheap. Behaviour per device (`Behaviour` fields, or a dict):

    outcome     "ok" | "fail" | "rollback" | "liar"   (default "ok"; liar: reboots
                into the OLD version and slot yet publishes Installed with the
                requestId, a device whose report cannot be trusted)
    fail_status OCPP status for outcome "fail"   (default "DownloadFailed")
    reason      failure text                     (default per status)
    download_s  seconds the download takes       (default 0.05)
    session_s   a charging session runs this long after the command: install
                waits for it (InstallScheduled)  (default 0)
    trial_s     trial boot until Installed / rollback (default 0.05)
    offline     never connects                    (default False)
    tz_min      device local time offset from UTC in minutes (install window)
    fetch       really GET the image over HTTP (checks size/sha256 when the
                fleet knows them)                 (default False)

Use from Python:  fleet = Fleet(host, port, ids, behaviours, ...); fleet.start()
(a background thread with its own event loop); fleet.stats(); fleet.stop().
Or as a process:  python -m tools.fleet --port P --count N --prefix sim- ...
(prints one JSON line with stats on SIGTERM/stdin close and at --stats-file).
"""
import argparse
import asyncio
import hashlib
import json
import signal
import struct
import sys
import threading
import time

FAIL_REASONS = {
    "DownloadFailed": "download: http",
    "InvalidSignature": "image: bad signature",
    "InstallVerificationFailed": "not_newer",
    "InstallationFailed": "install: no space",
}


class Behaviour:
    __slots__ = ("outcome", "fail_status", "reason", "download_s", "session_s", "trial_s",
                 "offline", "tz_min", "fetch")

    def __init__(self, outcome="ok", fail_status="DownloadFailed", reason=None, download_s=0.05,
                 session_s=0.0, trial_s=0.05, offline=False, tz_min=0, fetch=False):
        if outcome not in ("ok", "fail", "rollback", "liar"):
            raise ValueError("outcome must be ok, fail, rollback or liar")
        if outcome == "fail" and fail_status not in FAIL_REASONS:
            raise ValueError("fail_status must be one of " + ", ".join(FAIL_REASONS))
        self.outcome = outcome
        self.fail_status = fail_status
        self.reason = reason
        self.download_s = float(download_s)
        self.session_s = float(session_s)
        self.trial_s = float(trial_s)
        self.offline = bool(offline)
        self.tz_min = int(tz_min)
        self.fetch = bool(fetch)

    @classmethod
    def of(cls, v):
        if v is None:
            return cls()
        if isinstance(v, cls):
            return v
        return cls(**v)


def parse_version(text):
    main, _, build = (text or "0").partition("+")
    parts = [int(x) for x in main.split(".")] + [0, 0, 0]
    return (parts[0], parts[1], parts[2], int(build or 0))


def _epoch(iso):
    """ISO 8601 (Z or offset) -> UNIX seconds; 0 for None or unparsable."""
    if not iso:
        return 0
    import datetime
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0


# ---- a minimal MQTT 3.1.1 client (asyncio) -----------------------------------------

def _s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!H", len(b)) + b


def _packet(head, body):
    n = len(body)
    out = bytearray([head])
    while True:
        d = n % 128
        n //= 128
        out.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


class MiniMQTT:
    """Just enough MQTT for a device: CONNECT (will, user/password), SUBSCRIBE,
    PUBLISH QoS 0/1 both ways (PUBACK sent for incoming QoS 1), PINGREQ."""

    def __init__(self, client_id, on_message, keepalive=60):
        self.client_id = client_id
        self.on_message = on_message
        self.keepalive = keepalive
        self.reader = self.writer = None
        self._pid = 0
        self.connected = False
        self.reader_task = None

    async def connect(self, host, port, user=None, password=None, will=None):
        self.reader, self.writer = await asyncio.open_connection(host, port)
        flags = 0x02
        payload = _s(self.client_id)
        if will:
            topic, msg, qos, retain = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _s(topic) + _s(msg)
        if user is not None:
            flags |= 0x80
            payload += _s(user)
            if password is not None:
                flags |= 0x40
                payload += _s(password)
        body = _s("MQTT") + bytes([4, flags]) + struct.pack("!H", self.keepalive) + payload
        self.writer.write(_packet(0x10, body))
        head, data = await self._read()
        if head >> 4 != 2 or len(data) < 2 or data[1] != 0:
            raise ConnectionError("CONNACK refused (%r)" % (bytes(data),))
        self.connected = True

    async def _read(self):
        b = await self.reader.readexactly(1)
        mult, n = 1, 0
        while True:
            d = (await self.reader.readexactly(1))[0]
            n += (d & 0x7F) * mult
            mult *= 128
            if not d & 0x80:
                break
        data = await self.reader.readexactly(n) if n else b""
        return b[0], data

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def subscribe(self, topic, qos=0):
        self.writer.write(_packet(0x82, struct.pack("!H", self._next_pid()) + _s(topic) + bytes([qos])))

    def publish(self, topic, payload, retain=False, qos=0):
        if not self.connected:
            return
        if not isinstance(payload, (bytes, bytearray)):
            payload = json.dumps(payload, separators=(",", ":")).encode()
        body = _s(topic) + (struct.pack("!H", self._next_pid()) if qos else b"") + payload
        self.writer.write(_packet(0x30 | (qos << 1) | (1 if retain else 0), body))

    async def run(self):
        """Read packets until the connection ends (PUBACK/SUBACK/PINGRESP ignored)."""
        try:
            while True:
                head, data = await self._read()
                if head >> 4 == 3:
                    qos = (head >> 1) & 3
                    tl = struct.unpack("!H", data[:2])[0]
                    topic = data[2:2 + tl].decode()
                    off = 2 + tl
                    if qos:
                        pid = data[off:off + 2]
                        off += 2
                        self.writer.write(b"\x40\x02" + pid)
                    self.on_message(topic, data[off:])
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.connected = False

    async def ping_loop(self):
        while self.connected:
            await asyncio.sleep(self.keepalive / 2)
            if self.connected:
                self.writer.write(b"\xc0\x00")

    async def close(self, clean=True):
        """clean: DISCONNECT, then wait (<= 2 s) for the broker to close the
        connection, so that the PUBACKs it sent are read: closing a socket
        with unread data sends a RST, and the broker's kernel then drops
        what it had not read yet (our last publishes)."""
        if self.writer is None:
            return
        try:
            if clean:
                self.writer.write(b"\xe0\x00")
                await self.writer.drain()
                if self.reader_task is not None:
                    await asyncio.wait([self.reader_task], timeout=2.0)
            self.writer.close()
        except (ConnectionError, OSError):
            pass
        self.connected = False


# ---- one stand-in device ----------------------------------------------------------------

class Device:
    def __init__(self, fleet, device_id, behaviour, version, slot="A"):
        self.fleet = fleet
        self.id = device_id
        self.b = behaviour
        self.version = version
        self.slot = slot
        self.trial = False
        self.failed_version = None
        self.boot_reason = "power-on"
        self.fw = {"status": "Idle", "requestId": None, "progress": None, "reason": None}
        self.install_window = None
        self.update_cmds = []        # every update_firmware payload received (dicts)
        self.commands = []           # (name, payload dict) of every command received
        self.request_ids = set()
        self.busy = False
        self.mqtt = None
        self.session_until = 0.0
        self.installs = 0

    # -- connection -------------------------------------------------------------------------
    async def boot(self):
        f = self.fleet
        base = "evse/%s/" % self.id
        self.mqtt = MiniMQTT(self.id, self._on_message, keepalive=f.keepalive)
        self._offline = json.dumps({"online": False, "version": self.version, "slot": self.slot},
                                   separators=(",", ":")).encode()     # as report.offline()
        await self.mqtt.connect(f.host, f.port, f.user, f.password,
                                will=(base + "status", self._offline, 1, True))
        self.mqtt.subscribe(base + "cmd/+", 0)
        self._pub_status()
        self.mqtt.publish(base + "state", {"state": "A", "relay": False, "duty": 100.0, "current_a": 0,
                                           "source": "max", "fault": None, "paused": False,
                                           "session": None}, True)
        self.mqtt.publish(base + "firmware", self.fw, True, 1)
        self.mqtt.reader_task = f._spawn(self.mqtt.run())
        f._spawn(self.mqtt.ping_loop())

    async def reboot(self):
        # Link.close() publishes {"online": false} before a remote reset
        m = self.mqtt
        m.publish("evse/%s/status" % self.id, self._offline, True)
        await m.close()
        await asyncio.sleep(0.01)
        await self.boot()

    def _pub_status(self):
        self.mqtt.publish("evse/%s/status" % self.id, {
            "online": True, "version": self.version, "slot": self.slot, "trial": self.trial,
            "reason": self.boot_reason, "failed_version": self.failed_version}, True)

    def _pub_fw(self, status, rid, progress=None, reason=None):
        self.fw = {"status": status, "requestId": rid, "progress": progress, "reason": reason}
        self.fleet.statuses[status] = self.fleet.statuses.get(status, 0) + 1
        self.mqtt.publish("evse/%s/firmware" % self.id, self.fw, True, 1)

    def _reply(self, rid, error=None, **extra):
        r = {"id": rid, "ok": error is None}
        if error is not None:
            r["error"] = error
        r.update(extra)
        self.mqtt.publish("evse/%s/reply" % self.id, r)

    # -- commands -----------------------------------------------------------------------------
    def _on_message(self, topic, payload):
        name = topic.rsplit("/", 1)[1]
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if type(msg) is not dict or not isinstance(msg.get("id"), (str, int)):
            return
        rid = msg["id"]
        self.commands.append((name, msg))
        if name == "update_firmware":
            self.update_cmds.append(msg)
            err = self._check_update(msg)
            if err:
                return self._reply(rid, err)
            if self.busy:
                if msg.get("requestId") in self.request_ids:
                    return self._reply(rid)   # a re-send of the job it runs: idempotent, as the agent
                return self._reply(rid, "busy: update waiting for its reboot")
            self._reply(rid)
            self.request_ids.add(msg["requestId"])
            self.fleet._spawn(self._update(msg))
        elif name == "set_config":
            ch = msg.get("changes")
            if type(ch) is not dict:
                return self._reply(rid, "changes must be an object")
            for k in ch:
                if k != "install_window":   # the stand-in keeps only what it uses
                    return self._reply(rid, "unknown key: %s" % k)
            w = ch["install_window"]
            if w is not None and (type(w) is not list or len(w) != 2 or
                                  any(type(x) is not int or not 0 <= x <= 1439 for x in w)):
                return self._reply(rid, "install_window must be null or [start_min, end_min] with minutes 0..1439")
            self.install_window = w
            self._reply(rid)
        elif name == "get_config":
            self._reply(rid, config={"device_id": self.id, "board": self.fleet.board,
                                     "install_window": self.install_window})
        else:
            self._reply(rid, "unknown command: %s" % name)

    @staticmethod
    def _check_update(msg):
        allowed = ("id", "requestId", "retries", "retryInterval", "firmware", "location",
                   "retrieveDateTime", "installDateTime", "signingCertificate", "signature")
        for k in msg:
            if k not in allowed:
                return "unknown field: %s" % k
        fw = msg.get("firmware", {})
        if type(fw) is not dict:
            return "firmware must be an object"
        src = dict(msg)
        src.update(fw)
        if type(src.get("requestId")) is not int or not 0 <= src["requestId"] <= 2147483647:
            return "requestId must be an integer 0..2147483647"
        for k in ("location", "retrieveDateTime"):
            if type(src.get(k)) is not str or not src[k]:
                return "missing field: %s" % k
        return None

    def _in_window(self):
        w = self.install_window
        if not w:
            return True
        t = time.gmtime(time.time() + self.b.tz_min * 60)
        m = t.tm_hour * 60 + t.tm_min
        a, b = w
        return a <= m < b if a <= b else (m >= a or m < b)

    async def _update(self, msg):
        b = self.b
        src = dict(msg)
        src.update(msg.get("firmware") or {})
        rid = src["requestId"]
        f = self.fleet
        self.busy = True
        if b.session_s > 0:
            self.session_until = time.time() + b.session_s
        try:
            f.downloading += 1
            f.max_downloading = max(f.max_downloading, f.downloading)
            try:
                self._pub_fw("Downloading", rid, 0)
                new_version = f.new_version
                if b.fetch:
                    st, err, new_version = await self._fetch(src["location"], new_version)
                    if st:
                        self._pub_fw(st, rid, None, err)
                        return
                steps = 2
                for i in range(1, steps + 1):
                    await asyncio.sleep(b.download_s / steps)
                    if i < steps:
                        self._pub_fw("Downloading", rid, 100 * i // steps)
                if b.outcome == "fail" and b.fail_status == "DownloadFailed":
                    self._pub_fw("DownloadFailed", rid, None, b.reason or FAIL_REASONS["DownloadFailed"])
                    return
            finally:
                f.downloading -= 1
            if b.outcome == "fail" and b.fail_status == "InvalidSignature":
                self._pub_fw("InvalidSignature", rid, None, b.reason or FAIL_REASONS["InvalidSignature"])
                return
            self._pub_fw("Downloaded", rid)
            self._pub_fw("SignatureVerified", rid)
            if parse_version(new_version) <= parse_version(self.version):
                self._pub_fw("InstallVerificationFailed", rid, None, "not_newer")
                return
            if b.outcome == "fail" and b.fail_status == "InstallVerificationFailed":
                self._pub_fw("InstallVerificationFailed", rid, None,
                             b.reason or FAIL_REASONS["InstallVerificationFailed"])
                return
            scheduled = False
            inst = _epoch(src.get("installDateTime"))
            while time.time() < self.session_until or not self._in_window() or time.time() < inst:
                if not scheduled:
                    self._pub_fw("InstallScheduled", rid)
                    scheduled = True
                await asyncio.sleep(0.02)
            self._pub_fw("Installing", rid)
            if b.outcome == "fail" and b.fail_status == "InstallationFailed":
                self._pub_fw("InstallationFailed", rid, None, b.reason or FAIL_REASONS["InstallationFailed"])
                return
            self._pub_fw("InstallRebooting", rid)
            self.installs += 1
            old, old_slot = self.version, self.slot
            if b.outcome == "liar":
                self.boot_reason = "reset"
                await self.reboot()
                await asyncio.sleep(b.trial_s)
                self._pub_fw("Installed", rid)
                return
            # reboot into the new slot on trial
            self.version, self.slot, self.trial = new_version, ("B" if old_slot == "A" else "A"), True
            self.boot_reason = "trial"
            await self.reboot()
            await asyncio.sleep(b.trial_s)
            if b.outcome == "rollback":
                why = b.reason or "cp_selftest_failed"
                self.version, self.slot, self.trial = old, old_slot, False
                self.failed_version, self.boot_reason = new_version, "rollback"
                await self.reboot()
                self._pub_fw("InstallationFailed", rid, None, "%s (version %s)" % (why, new_version))
                return
            self.trial = False
            self._pub_fw("Installed", None)   # health.settle: published without a requestId
            self._pub_status()
        finally:
            self.busy = False
            f.finished += 1

    async def _fetch(self, url, version):
        """GET url (http only) -> (failure status or None, reason, version of the image)."""
        import urllib.parse
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            return "DownloadFailed", "download: url", version
        try:
            r, w = await asyncio.open_connection(u.hostname, u.port or 80)
            w.write(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                     % (u.path or "/", u.netloc)).encode())
            data = await r.read()
            w.close()
        except OSError:
            return "DownloadFailed", "download: connect", version
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
            return "DownloadFailed", "download: http", version
        exp = self.fleet.expect
        if exp.get("size") is not None and len(body) != exp["size"]:
            return "DownloadFailed", "download: closed", version
        if exp.get("sha256") and hashlib.sha256(body).hexdigest() != exp["sha256"]:
            return "InvalidSignature", "image: hash mismatch", version
        if len(body) >= 28 and body[:4] == b"\x3d\xb8\xf3\x96":   # MCUboot header magic (LE)
            ma, mi, rev, bld = struct.unpack_from("<BBHI", body, 20)
            version = "%d.%d.%d" % (ma, mi, rev) + ("+%d" % bld if bld else "")
        return None, None, version


# ---- the fleet ------------------------------------------------------------------------------

class Fleet:
    """N stand-in devices in one background thread (own asyncio loop)."""

    def __init__(self, host, port, ids, behaviours=None, version="1.0.0", new_version="1.1.0",
                 board="sim", user=None, password=None, keepalive=60, expect=None,
                 connect_batch=200):
        self.host, self.port = host, port
        self.user, self.password = user, password
        self.keepalive = keepalive
        self.board = board
        self.new_version = new_version
        self.expect = expect or {}
        self.connect_batch = connect_batch
        behaviours = behaviours or {}
        self.devices = {i: Device(self, i, Behaviour.of(behaviours.get(i)), version) for i in ids}
        self.downloading = 0
        self.max_downloading = 0
        self.finished = 0
        self.statuses = {}
        self.loop = None
        self._thread = None
        self._tasks = set()
        self._ready = threading.Event()
        self.error = None

    def _spawn(self, coro):
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _boot_all(self):
        devs = [d for d in self.devices.values() if not d.b.offline]
        for i in range(0, len(devs), self.connect_batch):
            await asyncio.gather(*(d.boot() for d in devs[i:i + self.connect_batch]))

    def start(self, timeout=60):
        """Connect every device that is not offline; returns when all are connected."""
        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._boot_all())
            except Exception as e:  # noqa: BLE001 - reported to the caller of start()
                self.error = e
            self._ready.set()
            if self.error is None:
                self.loop.run_forever()
            self.loop.close()
        self._thread = threading.Thread(target=run, daemon=True, name="fleet")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fleet did not connect within %ss" % timeout)
        if self.error is not None:
            raise RuntimeError("fleet failed to connect: %s" % self.error)
        return self

    def call(self, fn, *args):
        """Run fn(*args) in the fleet's loop (thread safe); returns its result."""
        async def job():
            r = fn(*args)
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return asyncio.run_coroutine_threadsafe(job(), self.loop).result(30)

    def stop(self):
        if self.loop is None or not self.loop.is_running():
            return
        async def close_all():
            await asyncio.gather(*(d.mqtt.close(clean=False) for d in self.devices.values()
                                   if d.mqtt is not None), return_exceptions=True)
            for t in list(self._tasks):
                t.cancel()
        try:
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)

    def stats(self):
        """Counters (read from any thread; approximate while updates run)."""
        devs = list(self.devices.values())
        return {
            "devices": len(devs),
            "update_cmds": {d.id: len(d.update_cmds) for d in devs},
            "distinct_requests": {d.id: len(d.request_ids) for d in devs},
            "installs": {d.id: d.installs for d in devs},
            "versions": {d.id: d.version for d in devs},
            "max_downloading": self.max_downloading,
            "finished": self.finished,
            "statuses": dict(self.statuses),
        }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--prefix", default="sim-")
    p.add_argument("--start", type=int, default=0, help="number of the first device")
    p.add_argument("--version", default="1.0.0", help="running version of the stand-ins")
    p.add_argument("--new-version", default="1.1.0", help="version an update installs (no --fetch)")
    p.add_argument("--behaviour", default="{}",
                   help='JSON: default behaviour, e.g. {"download_s": 0.1}; per device: '
                        '{"default": {...}, "sim-00003": {"outcome": "rollback"}}')
    p.add_argument("--stats-file", help="write the stats JSON here on exit")
    a = p.parse_args(argv)
    spec = json.loads(a.behaviour)
    default = spec.pop("default", None) if any(isinstance(v, dict) for v in spec.values()) else spec
    per = {k: v for k, v in spec.items() if isinstance(v, dict)} if default is not spec else {}
    ids = ["%s%05d" % (a.prefix, a.start + i) for i in range(a.count)]
    beh = {i: dict(default or {}, **per.get(i, {})) for i in ids}
    fleet = Fleet(a.host, a.port, ids, beh, a.version, a.new_version, user=a.user, password=a.password)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
    fleet.start(timeout=300)
    print("READY %d" % len(ids), flush=True)

    def stdin_watch():
        try:
            sys.stdin.read()
        except (OSError, ValueError):
            return
        stop.set()
    if not sys.stdin.isatty():
        threading.Thread(target=stdin_watch, daemon=True).start()
    while not stop.wait(0.2):
        pass
    st = fleet.stats()
    fleet.stop()
    out = json.dumps(st)
    if a.stats_file:
        with open(a.stats_file, "w") as f:
            f.write(out)
    print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
