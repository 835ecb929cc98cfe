# mptest: heapsize=128K
# Heap: evse.py (with the issue-8 supervision) + commands.py + config.py (protected
# store), plus 5 KB test payloads that need a contiguous block; the agent on a
# board loads .mpy and holds no such payloads. Measured on mp64 after setup and
# _make(): 80 KB live, 32 KB free but no free block over 2.6 KB at 112K, so the
# 5011-byte payload of test_oversize_refused_before_parsing fails there (mp32
# passes); 120K is the smallest cap that passes on mp64, 128K keeps 8 KB margin.
# firmware/commands.py: one reply per command with an id; refused commands change nothing.
from firmware.evse import Evse, Sense   # first: the largest module to compile from source
import json
import mptest
from firmware.hal import simflash
from firmware import config
from firmware.commands import Commands, MAX_PAYLOAD

_dir = None
_MUT = ("set_limit", "pause", "resume", "authorize", "stop_session", "clear_faults")


def setup():
    global _dir
    _dir = simflash.tmpdir("evse-cmd")
    config.install(_dir, {"device_id": "cmd-1", "board": "sim", "max_current_a": 32,
                          "mqtt": {"user": "u", "password": "hunter2"}})


def teardown():
    simflash.rmtree(_dir)


class Recorder:
    """A real Evse; records the state-changing calls that completed."""

    def __init__(self, evse=None):
        self.e = evse or Evse(32)
        self.calls = []

    def __getattr__(self, name):
        f = getattr(self.e, name)
        if name not in _MUT:
            return f

        def call(*a):
            r = f(*a)
            self.calls.append((name,) + a)
            return r
        return call


class Updater:
    def __init__(self, fail=None):
        self.requests = []
        self.fail = fail

    def start(self, req):
        if self.fail:
            raise ValueError(self.fail)
        self.requests.append(req)
        return "Accepted"


def _cfg_bytes():
    out = []
    for name in (config.FILE, config.COPY):
        with open(_dir + "/" + name, "rb") as f:
            out.append(f.read())
    return out


def _make(**kw):
    ev = Recorder()
    kw.setdefault("root", _dir)
    return ev, Commands(ev, **kw)


def test_set_limit_applies_with_ttl():
    ev, c = _make()
    mptest.eq(c.handle("set_limit", b'{"id": "a1", "amps": 10, "ttl": 60}'), {"id": "a1", "ok": True})
    mptest.eq(ev.calls, [("set_limit", "remote", 10, 60000)])
    mptest.eq(c.handle("set_limit", b'{"id": 7, "amps": null}'), {"id": 7, "ok": True})
    mptest.eq(ev.calls[-1], ("set_limit", "remote", None, None))


def test_set_limit_reaches_the_charging_core():
    ev, c = _make()
    e = ev.e
    t = 0
    s = Sense(cp_high_mv=9000, cp_low_mv=None)
    for _ in range(5):
        t += 100
        e.step(t, s)
    c.handle("set_limit", b'{"id": 1, "amps": 10}')
    s.cp_low_mv = -12000
    s.cp_high_mv = 6000
    for _ in range(100):
        t += 100
        cmd = e.step(t, s)
        s.relay_closed = cmd.relay
    mptest.eq(cmd.state, "C")
    mptest.eq(cmd.current_a, 10)
    mptest.eq(cmd.source, "remote")


def test_simple_commands():
    ev, c = _make()
    for name, want in (("pause", ("pause",)), ("resume", ("resume",)), ("clear_faults", ("clear_faults", False))):
        mptest.eq(c.handle(name, b'{"id": "x"}'), {"id": "x", "ok": True}, name)
        mptest.eq(ev.calls[-1], want)
    mptest.eq(c.handle("authorize", b'{"id": "x", "tag": "04A1B2"}'), {"id": "x", "ok": True})
    mptest.eq(ev.calls[-1], ("authorize", "04A1B2"))
    mptest.eq(c.handle("stop_session", b'{"id": "x"}'), {"id": "x", "ok": True, "stopped": False})
    mptest.eq(ev.calls[-1], ("stop_session", "remote"))


def test_remote_clear_faults_leaves_latched_faults():
    # (how the fault latches, code): a backend clear_faults must not re-energise
    for how, code in (("rcd", "rcd_latched"), ("weld", "relay_welded")):
        e = Evse(32, selftest=False, rcd_max_trips=1)
        c = Commands(Recorder(e), root=_dir)
        s = Sense(cp_high_mv=9000, cp_low_mv=-12000)
        t = 0
        for i in range(200):
            if i == 10:
                s.cp_high_mv = 6000
            if i == 50:
                if how == "rcd":
                    s.rcd_fault = True
                else:
                    s.cp_high_mv = 9000   # the EV stops; the contactor stays closed
            t += 20
            cmd = e.step(t, s)
            if how == "rcd" or i < 50:
                s.relay_closed = cmd.relay
        mptest.eq((cmd.fault, cmd.state), (code, "F"), how)
        s.rcd_fault = False
        s.relay_closed = False
        mptest.eq(c.handle("clear_faults", b'{"id": 1}'), {"id": 1, "ok": True}, how)
        for _ in range(300):
            t += 20
            cmd = e.step(t, s)
            mptest.eq((cmd.fault, cmd.relay), (code, False), "after a remote clear", how)
        e.clear_faults()   # the installer's local reset clears it
        t += 20
        mptest.eq(e.step(t, s).fault, None, how)


def test_refused_commands_change_nothing():
    up = Updater()
    resets = []
    changed = []
    ev, c = _make(updater=up, on_reset=resets.append, config_changed=changed.append)
    before = _cfg_bytes()
    cases = (
        ("set_limit", b'{"id": 1, "amps": 81}', "amps must be a number 0..80"),
        ("set_limit", b'{"id": 1, "amps": -1}', "amps"),
        ("set_limit", b'{"id": 1, "amps": "16"}', "amps"),
        ("set_limit", b'{"id": 1, "amps": true}', "amps"),
        ("set_limit", b'{"id": 1, "amps": 1e999}', "amps"),
        ("set_limit", b'{"id": 1}', "missing field: amps"),
        ("set_limit", b'{"id": 1, "amps": 10, "ttl": 0}', "ttl"),
        ("set_limit", b'{"id": 1, "amps": 10, "ttl": "60"}', "ttl"),
        ("set_limit", b'{"id": 1, "amps": 10, "volts": 230}', "unknown field: volts"),
        ("pause", b'{"id": 1, "now": true}', "unknown field: now"),
        ("authorize", b'{"id": 1, "tag": 42}', "tag"),
        ("authorize", b'{"id": 1, "tag": ""}', "tag"),
        ("stop_session", b'{"id": 1, "reason": 3}', "reason"),
        ("launch", b'{"id": 1}', "unknown command: launch"),
        ("set_config", b'{"id": 1, "changes": {"max_current_a": 200}}', "max_current_a"),
        ("set_config", b'{"id": 1, "changes": {"board": "esp32"}}', "installer setting: board"),
        ("set_config", b'{"id": 1, "changes": {"device_id": "x"}}', "installer setting: device_id"),
        ("set_config", b'{"id": 1, "changes": {"max_current_a": 80}}', "installer setting: max_current_a"),
        ("set_config", b'{"id": 1, "changes": {"ventilation": true}}', "installer setting: ventilation"),
        ("set_config", b'{"id": 1, "changes": {"mqtt": {"host": "evil.example"}}}', "installer setting: mqtt"),
        ("set_config", b'{"id": 1, "changes": {"health": {"need_mqtt": false}}}', "installer setting: health"),
        ("set_config", b'{"id": 1, "changes": {"fallback_current_a": 40}}', "fallback_current_a"),
        ("set_config", b'{"id": 1, "changes": {"nope": 1}}', "unknown key: nope"),
        ("set_config", b'{"id": 1, "changes": []}', "changes must be an object"),
        ("set_config", b'{"id": 1}', "changes must be an object"),
        ("reset", b'{"id": 1, "type": "warm"}', "type must be one of"),
        ("update_firmware", b'{"id": 1, "requestId": 5}', "missing field: location"),
        ("update_firmware", b'{"id": 1, "requestId": "5", "firmware": {"location": "http://x/a.bin", '
                            b'"retrieveDateTime": "2030-01-01T00:00:00Z"}}', "requestId"),
        ("update_firmware", b'{"id": 1, "requestId": 5, "firmware": {"location": "http://x/a.bin", '
                            b'"retrieveDateTime": "2030-01-01T00:00:00Z", "colour": 1}}', "unknown field: firmware.colour"),
        ("update_firmware", b'{"id": 1, "requestId": 5, "firmware": 3}', "firmware must be an object"),
        ("update_firmware", b'{"id": 1, "requestId": 5, "retries": -1, "firmware": {"location": "http://x", '
                            b'"retrieveDateTime": "2030-01-01T00:00:00Z"}}', "retries"),
        ("pause", b'{"id": 1, "amps": 10}', "unknown field: amps"),
        ("pause", b'[1, 2]', None),
        ("pause", b'{"id": 1,', "malformed JSON"),
        ("pause", b'{"id": 1, 2: 3}', "bad field name"),
    )
    for name, payload, err in cases:
        r = c.handle(name, payload)
        if err is None:
            mptest.eq(r, None, name, payload)
            continue
        mptest.true(r is not None and r["id"] == 1 and r["ok"] is False, name, payload, r)
        mptest.true(err in r["error"], name, payload, r)
        mptest.eq(sorted(r), ["error", "id", "ok"])
    mptest.eq(ev.calls, [])
    mptest.eq(up.requests, [])
    mptest.eq(resets, [])
    mptest.eq(changed, [])
    mptest.eq(_cfg_bytes(), before)
    mptest.eq(c.refused, len(cases))


def test_refused_by_the_charging_core():
    ev, c = _make()
    for i in range(8):   # the core holds a bounded number of limit sources: fill them
        ev.e.set_limit("src%d" % i, 16)
    r = c.handle("set_limit", b'{"id": "q", "amps": 10}')
    mptest.eq(r["ok"], False, r)
    mptest.true("limit" in r["error"], r)
    mptest.eq(ev.calls, [])


def test_no_or_bad_id_means_no_reply_and_no_action():
    ev, c = _make()
    for p in (b'{"amps": 10}', b'{"id": true, "amps": 10}', b'{"id": 1.5, "amps": 10}',
              b'{"id": "", "amps": 10}', b'{"id": null, "amps": 10}', b'{"id": [1], "amps": 10}',
              b'{"id": "' + b"x" * 65 + b'", "amps": 10}', b'{"id": 99999999999999999999, "amps": 10}'):
        mptest.eq(c.handle("set_limit", p), None, p)
    mptest.eq(ev.calls, [])
    mptest.eq(c.unanswered, 8)
    mptest.eq(c.handle("set_limit", b'{"id": "' + b"x" * 64 + b'", "amps": 10}')["ok"], True)


def test_malformed_json_gets_error_with_scanned_id():
    ev, c = _make()
    for p, rid in ((b'{"id": "c-9", "amps": 1', "c-9"), (b'{"id":17,"amps":1', 17), (b'{"id": -3 x', -3),
                   (b'\xff\xfe{"id": "u"', "u"), (b'{"id": "\xff"}', None), (b'garbage', None),
                   (b'{"id": 1.5, ', None), (b'', None)):
        r = c.handle("set_limit", p)
        if rid is None:
            mptest.eq(r, None, p)
        else:
            mptest.eq(r, {"id": rid, "ok": False, "error": "malformed JSON"}, p)
    mptest.eq(ev.calls, [])


def test_oversize_refused_before_parsing():
    ev, c = _make()
    pad = b" " * (MAX_PAYLOAD + 10)
    r = c.handle("set_limit", b'{"id": "big", "amps": 10}' + pad)   # valid JSON, but too large
    mptest.eq(r["id"], "big")
    mptest.eq(r["ok"], False)
    mptest.true("too large" in r["error"], r)
    r = c.handle("pause", b'{"id": 5, ' + b"[" * 5000)
    mptest.eq((r["id"], r["ok"]), (5, False))
    mptest.eq(c.handle("pause", b"x" * 5000), None)
    mptest.eq(ev.calls, [])
    mptest.eq(c.handle("set_limit", (b'{"id": "ok", "amps": 10}' + b" " * MAX_PAYLOAD)[:MAX_PAYLOAD])["ok"], True)


def test_get_config_hides_password():
    ev, c = _make()
    r = c.handle("get_config", b'{"id": "g"}')
    mptest.eq(r["ok"], True)
    mptest.eq(r["config"]["mqtt"]["user"], "u")
    mptest.eq(r["config"]["mqtt"]["password"], config.REDACTED)
    mptest.true("hunter2" not in json.dumps(r))
    mptest.eq(r["config"]["max_current_a"], 32)


def test_set_config_persists_and_notifies():
    changed = []
    ev, c = _make(config_changed=changed.append)
    r = c.handle("set_config", b'{"id": "s", "changes": {"telemetry_ms": 5000, "require_auth": true}}')
    mptest.eq(r, {"id": "s", "ok": True})
    cfg = config.load(_dir)
    mptest.eq(cfg["telemetry_ms"], 5000)
    mptest.eq(cfg["require_auth"], True)
    mptest.eq(cfg["mqtt"]["password"], "hunter2")   # untouched fields kept
    mptest.eq(len(changed), 1)
    mptest.eq(changed[0]["telemetry_ms"], 5000)


def test_reset_calls_hook_after_the_reply():
    seen = []
    c = None

    def on_reset(kind):
        seen.append((kind, c.handled, c.refused))
    ev, c = _make(on_reset=on_reset)
    mptest.eq(c.handle("reset", b'{"id": "r"}'), {"id": "r", "ok": True})
    mptest.eq(seen, [("soft", 1, 0)])
    mptest.eq(c.handle("reset", b'{"id": "r2", "type": "hard"}'), {"id": "r2", "ok": True})
    mptest.eq(seen[-1][0], "hard")
    ev, c2 = _make()
    r = c2.handle("reset", b'{"id": "r3"}')
    mptest.eq((r["ok"], r["error"]), (False, "reset not available"))


def test_reset_without_id_does_not_reset():
    seen = []
    ev, c = _make(on_reset=seen.append)
    mptest.eq(c.handle("reset", b'{}'), None)
    mptest.eq(seen, [])


def test_update_firmware_passes_ocpp_request():
    up = Updater()
    ev, c = _make(updater=up)
    r = c.handle("update_firmware", json.dumps({
        "id": "u1", "requestId": 42, "retries": 3, "retryInterval": 60,
        "firmware": {"location": "https://fw.example/evse-1.2.0.bin", "retrieveDateTime": "2030-01-01T00:00:00Z",
                     "installDateTime": "2030-01-02T03:00:00Z", "signingCertificate": "-", "signature": "-"}}))
    mptest.eq(r, {"id": "u1", "ok": True})
    req = up.requests[0]
    mptest.eq(req["requestId"], 42)
    mptest.eq(req["location"], "https://fw.example/evse-1.2.0.bin")
    mptest.eq(req["retrieveDateTime"], "2030-01-01T00:00:00Z")
    mptest.eq(req["installDateTime"], "2030-01-02T03:00:00Z")
    mptest.eq((req["retries"], req["retryInterval"]), (3, 60))
    r = c.handle("update_firmware", b'{"id": "u2", "requestId": 43, "location": "http://h/f.bin", '
                                    b'"retrieveDateTime": "2030-01-01T00:00:00Z"}')
    mptest.eq(r["ok"], True)
    mptest.eq(up.requests[1], {"requestId": 43, "location": "http://h/f.bin",
                               "retrieveDateTime": "2030-01-01T00:00:00Z"})


def test_update_firmware_refusals():
    good = b'{"id": "u", "requestId": 1, "location": "http://h/f.bin", "retrieveDateTime": "2030-01-01T00:00:00Z"}'
    ev, c = _make(updater=Updater(fail="busy: an installed update awaits reboot"))
    r = c.handle("update_firmware", good)
    mptest.eq(r, {"id": "u", "ok": False, "error": "busy: an installed update awaits reboot"})
    ev, c = _make()
    r = c.handle("update_firmware", good)
    mptest.eq(r["error"], "firmware update not available")
    up = Updater()
    ev, c = _make(updater=up)
    r = c.handle("update_firmware", b'{"id": "u", "requestId": 1, "location": "http://h/f.bin", '
                                    b'"retrieveDateTime": "x", "firmware": {"location": "http://h/g.bin"}}')
    mptest.eq(r["error"], "location given twice")
    mptest.eq(up.requests, [])


def test_bug_in_a_dependency_is_reported_not_raised():
    class Broken:
        def pause(self):
            raise RuntimeError("boom")
    c = Commands(Broken(), root=_dir)
    r = c.handle("pause", b'{"id": 1}')
    mptest.eq(r, {"id": 1, "ok": False, "error": "internal error: RuntimeError"})
    mptest.eq(c.handle(None, b'{"id": 1}')["error"], "unknown command: None")
    mptest.eq(c.handle("pause", None)["ok"] if c.handle("pause", None) else None, None)


def test_set_config_cannot_weaken_what_the_installer_set():
    # the review's reproduction: rating 16 A -> 80 A, charging in D, auth off, relaxed trial checks
    mptest.eq(config.install(_dir, {"device_id": "cmd-1", "board": "sim", "max_current_a": 16,
                                    "require_auth": True}), None)
    before = _cfg_bytes()
    ev, c = _make()
    for ch, want in (({"max_current_a": 80}, "installer setting: max_current_a"),
                     ({"ventilation": True}, "installer setting: ventilation"),
                     ({"require_auth": False}, "require_auth may only be turned on remotely"),
                     ({"health": {"trial_s": 10, "need_mqtt": False}}, "installer setting: health"),
                     ({"mqtt": {"host": "attacker.example", "port": 1883}}, "installer setting: mqtt")):
        r = c.handle("set_config", json.dumps({"id": "w", "changes": ch}))
        mptest.eq((r["ok"], r["error"].startswith(want)), (False, True), ch, r)
        mptest.eq(_cfg_bytes(), before, ch)
    cfg = config.load(_dir)
    mptest.eq((cfg["max_current_a"], cfg["ventilation"], cfg["require_auth"]), (16, False, True))


def test_config_commands_without_valid_config_fail_closed():
    for name in (config.FILE, config.COPY):
        with open(_dir + "/" + name, "wb") as f:
            f.write(b'{"max_current_a": 36}')
    ev, c = _make()
    r = c.handle("get_config", b'{"id": "g"}')
    mptest.eq(r["config"]["max_current_a"], 0)
    mptest.true("no valid configuration" in r["config"]["fault"], r)
    r = c.handle("set_config", b'{"id": "s", "changes": {"telemetry_ms": 5000}}')
    mptest.eq(r["ok"], False)
    mptest.true("no valid configuration" in r["error"], r)
