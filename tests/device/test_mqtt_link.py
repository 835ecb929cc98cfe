# mptest: heapsize=128K timeout=120 prep=tests.prep.broker:make lanes=own-prep
# The MQTT link against a real broker (mosquitto, else amqtt: tests/prep/broker.py), a
# paho-mqtt backend on the host side, a stalled broker and a closed port.
# Heap: an mbedTLS session plus the link, the session log and the commands
# exceed 96K on the 64-bit unix port; the link's own heap use is in the bench.
# Waiting for the network uses the real clock with a deadline; every timing
# rule of the link itself (CONNACK timeout, backoff) is driven in virtual time.
import json
import time
import socket
import mptest
from firmware.hal import simflash

_info = None
_dirs = []


def _broker():
    global _info
    if _info is None:
        with open(mptest.data_path("broker.json")) as f:
            _info = json.load(f)
    if _info.get("error"):
        raise AssertionError(_info["error"])
    return _info


def _cfg(tls=False, port=None, **kw):
    b = _broker()
    c = {"host": "127.0.0.1", "port": port or (b["tls_port"] if tls else b["port"]),
         "user": b["user"], "password": b["password"], "tls": tls, "ca": b["ca"] if tls else None,
         "keepalive": 60, "client_id": None}
    c.update(kw)
    return c


def _ctl(req):
    s = socket.socket()
    s.settimeout(30)
    s.connect(socket.getaddrinfo("127.0.0.1", _broker()["control_port"])[0][-1])
    s.write(json.dumps(req).encode() + b"\n")
    line = s.readline()
    s.close()
    rep = json.loads(line)
    if not rep.get("ok"):
        raise AssertionError("control %r failed: %r" % (req, rep))
    return rep


def _msgs(dev, suffix):
    return _ctl({"op": "msgs", "topic": "evse/%s/%s" % (dev, suffix)})["msgs"]


def _wait_msgs(dev, suffix, n=1, timeout_ms=5000):
    t0 = time.ticks_ms()
    while True:
        m = _msgs(dev, suffix)
        if len(m) >= n or time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            return m
        time.sleep_ms(20)


class Clock:
    """Real time plus a skew that jumps over backoff delays."""

    def __init__(self):
        self.skew = 0

    def now(self):
        return time.ticks_add(time.ticks_ms(), self.skew)


def _pump(link, cond, clock, timeout_ms=8000, skip_backoff=True):
    t0 = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            return False
        now = clock.now()
        if skip_backoff and link.state == "idle" and time.ticks_diff(link.retry_at, now) > 0:
            clock.skew += time.ticks_diff(link.retry_at, now)
            now = clock.now()
        link.poll(now)
        time.sleep_ms(1)
    return True


def _tmpdir():
    d = simflash.tmpdir("evse-link")
    _dirs.append(d)
    return d


_links = []


def _link(cfg, dev, clock=None, rand=None):
    from firmware.mqtt import Link
    link = Link(cfg, dev, (clock or Clock()).now(), rand)
    _links.append(link)
    return link


def teardown():
    while _links:
        _links.pop().close()
    while _dirs:
        simflash.rmtree(_dirs.pop())


def test_connect_with_user_password_publishes_status_and_state():
    clk = Clock()
    link = _link(_cfg(), "t-conn", clk)
    link.publish("status", {"online": True, "version": "1.0.0"}, retain=True)
    link.publish("state", {"state": "A"}, retain=True)
    link.publish("state", {"state": "B"}, retain=True)     # only the latest retained state is kept
    link.publish("telemetry", {"voltage_v": 230.0})
    mptest.true(_pump(link, lambda: link.connected and not link.pending(), clk), link.state, link.last_error)
    mptest.eq(link.attempts, 1)
    st = _wait_msgs("t-conn", "status")
    mptest.eq(json.loads(st[-1][0])["online"], True)
    states = _wait_msgs("t-conn", "state")
    mptest.eq([json.loads(p)["state"] for p, r in states], ["B"])
    mptest.eq(json.loads(_wait_msgs("t-conn", "telemetry")[0][0]), {"voltage_v": 230.0})


def test_wrong_password_refused_cleanly():
    clk = Clock()
    link = _link(_cfg(password="wrong"), "t-badpw", clk)
    mptest.true(_pump(link, lambda: link.attempts == 1 and link.state == "idle", clk, skip_backoff=False),
                link.state)
    mptest.eq(link.connected, False)
    mptest.true("refused by broker" in link.last_error, link.last_error)
    mptest.true(link.backoff_ms >= 1000, link.backoff_ms)
    now = clk.now()
    for _ in range(20):            # before retry_at: no new attempt
        link.poll(now)
    mptest.eq(link.attempts, 1)


def test_tls_with_ca_certificate():
    clk = Clock()
    link = _link(_cfg(tls=True), "t-tls", clk)
    link.publish("telemetry", b'{"over": "tls"}')
    mptest.true(_pump(link, lambda: link.connected and not link.pending(), clk), link.last_error)
    mptest.eq(_wait_msgs("t-tls", "telemetry")[0][0], '{"over": "tls"}')


def test_tls_with_der_ca_and_host_name():
    clk = Clock()
    link = _link(_cfg(tls=True, ca=_broker()["ca_der"], host="localhost"), "t-tls2", clk)
    mptest.true(_pump(link, lambda: link.connected, clk), link.last_error)


def test_tls_with_wrong_ca_refused():
    clk = Clock()
    link = _link(_cfg(tls=True, ca=_broker()["other_ca"]), "t-tlsbad", clk)
    mptest.true(_pump(link, lambda: link.attempts == 1 and link.state == "idle", clk, skip_backoff=False))
    mptest.eq(link.connected, False)
    mptest.true("TLS" in link.last_error or "certificate" in link.last_error, link.last_error)


def test_tls_without_ca_file_backs_off():
    clk = Clock()
    link = _link(_cfg(tls=True, ca="/nonexistent/ca.pem"), "t-tlsnoca", clk)
    link.poll(clk.now())
    mptest.eq(link.state, "idle")
    mptest.true(link.last_error, link.last_error)
    mptest.true(link.backoff_ms >= 1000)


def test_commands_and_replies_round_trip():
    from firmware.commands import Commands

    class Ev:
        calls = []

        def set_limit(self, *a):
            if not 0 <= a[1] <= 80:
                raise ValueError("bad")
            self.calls.append(a)

        def pause(self):
            self.calls.append(("pause",))

    d = _tmpdir()
    cmds = Commands(Ev(), root=d)
    clk = Clock()
    link = _link(_cfg(), "t-cmd", clk)
    link.on_message = lambda name, p: (lambda r: r and link.publish("reply", r))(cmds.handle(name, p))
    mptest.true(_pump(link, lambda: link.connected, clk), link.last_error)
    _pump(link, lambda: False, clk, timeout_ms=200)        # let SUBACK arrive
    _ctl({"op": "pub", "topic": "evse/t-cmd/cmd/set_limit", "payload": '{"id": "c1", "amps": 10, "ttl": 30}'})
    _ctl({"op": "pub", "topic": "evse/t-cmd/cmd/set_limit", "payload": '{"id": "c2", "amps": 100}'})
    _ctl({"op": "pub", "topic": "evse/t-cmd/cmd/explode", "payload": '{"id": 3}'})
    _ctl({"op": "pub", "topic": "evse/t-cmd/cmd/pause", "payload": '{"id": 4, '})
    _ctl({"op": "pub", "topic": "evse/t-cmd/cmd/pause", "payload": '{"id": "big", "x": "' + "y" * 6000 + '"}'})
    _ctl({"op": "pub", "topic": "evse/other/cmd/pause", "payload": '{"id": 5}'})   # not ours
    _ctl({"op": "pub", "topic": "evse/t-cmd/cmd/pause", "payload": '{"id": 6}'})
    got = {}

    def done():
        for p, r in _msgs("t-cmd", "reply"):
            rep = json.loads(p)
            got[rep["id"]] = rep
        return len(got) >= 6
    mptest.true(_pump(link, done, clk, timeout_ms=8000), got, link.last_error)
    mptest.eq(got["c1"], {"id": "c1", "ok": True})
    mptest.eq(got["c2"]["ok"], False)
    mptest.true("amps" in got["c2"]["error"], got["c2"])
    mptest.eq(got[3], {"id": 3, "ok": False, "error": "unknown command: explode"})
    mptest.eq(got[4], {"id": 4, "ok": False, "error": "malformed JSON"})
    mptest.eq(got["big"]["ok"], False)
    mptest.true("too large" in got["big"]["error"], got["big"])
    mptest.eq(got[6], {"id": 6, "ok": True})
    mptest.true(5 not in got)
    mptest.eq(Ev.calls, [("remote", 10, 30000), ("pause",)])
    mptest.eq(link.connected, True)     # the oversize message did not break the link


def test_broker_down_backs_off_exponentially_with_jitter():
    b = _broker()
    r = [0.0]
    clk = Clock()
    link = _link(_cfg(port=b["down_port"]), "t-down", clk, rand=lambda: r[0])
    delays = []
    now = clk.now()
    for i in range(9):
        r[0] = 0.999 if i % 2 else 0.0
        t0 = time.ticks_ms()
        while link.attempts == i or link.state != "idle":
            link.poll(now)
            mptest.true(time.ticks_diff(time.ticks_ms(), t0) < 5000, "attempt never ended")
        mptest.eq(link.connected, False)
        mptest.true("refused" in link.last_error, link.last_error)
        delays.append(link.backoff_ms)
        mptest.eq(link.retry_at, time.ticks_add(now, link.backoff_ms))
        link.poll(time.ticks_add(now, link.backoff_ms - 1))     # too early: nothing happens
        mptest.eq(link.attempts, i + 1)
        now = time.ticks_add(now, link.backoff_ms)
    # nominal 1, 2, 4, ... 60 s; jitter takes [d/2, d); never below 1 s
    for i, d in enumerate(delays):
        nominal = min(1000 << i, 60000)
        lo = max(nominal // 2, 1000)
        mptest.true(lo <= d <= nominal, i, d, delays)
    mptest.eq(delays[-2], 59970)      # capped at 60 s, jitter 0.999
    mptest.eq(delays[-1], 30000)      # d/2 with rand 0


def test_stalled_broker_times_out_and_backs_off():
    b = _broker()
    clk = Clock()
    link = _link(_cfg(port=b["stalled_port"]), "t-stall", clk)
    for i in range(40):
        link.publish("telemetry", {"n": i})          # bounded queue while offline
    mptest.true(link.pending() <= 16 + 1, link.pending())
    mptest.eq(link.dropped, 24)
    now = clk.now()
    mptest.true(_pump(link, lambda: link.state == "connack", clk, skip_backoff=False))
    for _ in range(50):
        link.poll(now)                               # accepted, never answered: still waiting
    mptest.eq(link.state, "connack")
    link.poll(time.ticks_add(now, 10000))            # CONNACK deadline (virtual time)
    mptest.eq(link.state, "idle")
    mptest.eq(link.connected, False)
    mptest.true("CONNACK" in link.last_error, link.last_error)
    mptest.eq(link.backoff_ms, 1000)
    mptest.eq(link.attempts, 1)


def test_session_records_survive_reboot_and_broker_restart():
    from firmware.sessionlog import SessionLog
    d = _tmpdir()
    clk = Clock()
    log = SessionLog(d)
    link = _link(_cfg(), "t-sess", clk)
    link.session_log = log
    link.publish("status", {"online": True}, retain=True)
    mptest.true(_pump(link, lambda: link.connected, clk), link.last_error)
    log.append({"id": 1, "energy_wh": 100})
    mptest.true(_pump(link, lambda: len(log) == 0, clk), len(log))     # acked by PUBACK
    mptest.eq(len(_wait_msgs("t-sess", "session", 1)), 1)  # delivered (amqtt acks before it delivers)
    _ctl({"op": "stop"})
    try:
        mptest.true(_pump(link, lambda: not link.connected, clk, skip_backoff=False), link.state)
        log.append({"id": 2, "energy_wh": 200})
        log.append({"id": 3, "energy_wh": 300})
        for _ in range(5):                           # broker down: attempts fail, records stay
            _pump(link, lambda: False, clk, timeout_ms=30)
        mptest.eq(len(log), 2)
        link.close()
        # "reboot": a new log over the same files and a new link
        log = SessionLog(d)
        mptest.eq(len(log), 2)
        link = _link(_cfg(), "t-sess", clk)
        link.session_log = log
        link.publish("status", {"online": True, "boot": 2}, retain=True)
        for _ in range(3):
            _pump(link, lambda: False, clk, timeout_ms=30)
        mptest.eq(link.connected, False)
        mptest.true(link.failures >= 1)
    finally:
        _ctl({"op": "start"})
    mptest.true(_pump(link, lambda: link.connected and len(log) == 0, clk, timeout_ms=15000),
                link.state, link.last_error, len(log))
    recs = [json.loads(p) for p, r in _wait_msgs("t-sess", "session", 3)]
    mptest.eq([x["id"] for x in recs], [1, 2, 3])
    mptest.eq([x["seq"] for x in recs], [1, 2, 3])
    st = _wait_msgs("t-sess", "status", 2)
    mptest.eq(json.loads(st[-1][0]), {"online": True, "boot": 2})   # re-sent after the reconnect


def test_keepalive_ping_answered():
    clk = Clock()
    link = _link(_cfg(keepalive=10), "t-ping", clk)
    mptest.true(_pump(link, lambda: link.connected and not link.pending(), clk), link.last_error)
    clk.skew += 6000                                 # half the keepalive passed: PINGREQ
    link.poll(clk.now())
    mptest.true(link._ping_at is not None)
    mptest.true(_pump(link, lambda: link._ping_at is None, clk, timeout_ms=3000), "no PINGRESP")
    mptest.eq(link.connected, True)


def test_last_will_marks_offline():
    clk = Clock()
    link = _link(_cfg(), "t-will", clk)
    link.publish("status", {"online": True}, retain=True)
    mptest.true(_pump(link, lambda: link.connected and not link.pending(), clk), link.last_error)
    mptest.eq(len(_wait_msgs("t-will", "status", 1)), 1)   # delivered (amqtt may else let the will overtake it)
    link._sock.close()                               # connection lost without DISCONNECT
    st = _wait_msgs("t-will", "status", 2)
    mptest.eq([json.loads(p) for p, r in st], [{"online": True}, {"online": False}])


class _DeadSocket:
    # connected, then nothing: writes never progress, nothing is ever read
    def __init__(self, accept=True):
        self.accept = accept
        self.closed = False

    def write(self, b):
        return len(b) if self.accept else None

    def readinto(self, b):
        return None

    def close(self):
        self.closed = True


def _up_on(sock, keepalive=10):
    from firmware.mqtt import Link
    link = Link(_cfg(keepalive=keepalive), "t-dead", 0)
    link._sock = sock                                # white box: pretend CONNACK came
    link._st = 3
    link.connected = True
    link._t_tx = link._t_rx = link._t_prog = 0
    return link


def test_silent_broker_after_connect_detected_by_keepalive():
    sock = _DeadSocket()
    link = _up_on(sock)
    link.poll(4000)
    mptest.eq(link._ping_at, None)
    link.poll(5000)                                  # keepalive/2: PINGREQ
    mptest.eq(link._ping_at, 5000)
    link.poll(9999)
    mptest.eq(link.connected, True)
    link.poll(10000)                                 # no PINGRESP within 5 s
    mptest.eq(link.connected, False)
    mptest.true("PINGRESP" in link.last_error, link.last_error)
    mptest.true(sock.closed)
    mptest.eq(link.retry_at, 10000 + link.backoff_ms)


def test_broker_not_reading_after_connect_detected():
    sock = _DeadSocket(accept=False)
    link = _up_on(sock, keepalive=600)
    link.publish("telemetry", b"x" * 100)
    link.poll(0)
    mptest.true(link.pending() > 0)
    link.poll(9999)
    mptest.eq(link.connected, True)
    link.poll(10000)
    mptest.eq(link.connected, False)
    mptest.true("stalled" in link.last_error, link.last_error)
    mptest.true(sock.closed)


def test_suspend_for_install_releases_buffers_and_reconnects():
    # the install step of an update (agent._quiesce): the connection closes,
    # the receive and send buffers go back to the heap, nothing queued is
    # lost, and the next poll reconnects at once (no backoff)
    import gc
    clk = Clock()
    link = _link(_cfg(), "t-susp", clk)
    mptest.true(_pump(link, lambda: link.connected and not link.pending(), clk), link.last_error)
    gc.collect()
    m0 = gc.mem_alloc()
    link.suspend(clk.now())
    gc.collect()
    freed = m0 - gc.mem_alloc()
    mptest.true(freed >= 2048, "receive buffer given back", freed)
    mptest.eq((link.connected, link.resuming, link._ibuf), (False, True, None))
    link.publish("firmware", {"status": "Installing"}, retain=True, qos=1)
    link.publish("telemetry", {"voltage_v": 231.0})
    mptest.true(link.pending() > 0)
    ups = link.ups
    link.poll(clk.now())
    mptest.eq(link.state, "connecting", "reconnects at the next poll")
    mptest.true(_pump(link, lambda: link.connected and not link.pending(), clk, skip_backoff=False),
                link.last_error)
    mptest.eq((link.ups, link.resuming, link.failures), (ups + 1, False, 0))
    mptest.eq(json.loads(_wait_msgs("t-susp", "firmware")[-1][0])["status"], "Installing")
    mptest.eq(json.loads(_wait_msgs("t-susp", "telemetry")[-1][0]), {"voltage_v": 231.0})
