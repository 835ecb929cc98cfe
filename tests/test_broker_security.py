"""Broker security as `evsectl credentials` sets it up (tools/credentials.py),
against a real mosquitto (tests/prep/secure_broker.py): TLS with the generated
CA, client certificates, per-device passwords and the ACL. A second device's
credentials can neither command nor impersonate the first; only the backend
identity writes cmd/. The device side is paho-mqtt and, for the last test,
the device's own MQTT link (firmware/mqtt.py) on the MicroPython unix port.

Negative checks need no sleeps: a QoS 1 publish is PUBACKed after the broker
has routed (or dropped) it, and one connection's messages arrive in order, so
a marker published afterwards and received proves the earlier one was not."""
import json
import os
import subprocess
import threading

import pytest

from tests.prep.secure_broker import SecureBroker, find_mosquitto
from tools import credentials, mpunix

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = SecureBroker(str(tmp_path_factory.mktemp("secbroker")), client_certs=True).start()
    yield b
    b.stop()


def _pub(c, topic, payload):
    info = c.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    assert info.is_published(), topic


def _sub(c, topic):
    n = len(c.subacks)
    ev = threading.Event()
    prev = c.on_subscribe

    def on_sub(cl, ud, mid, rcs, props=None):
        prev(cl, ud, mid, rcs, props)
        ev.set()
    c.on_subscribe = on_sub
    c.subscribe(topic, qos=1)
    assert ev.wait(10), "no SUBACK for " + topic
    c.on_subscribe = prev
    return c.subacks[n]


def _wait_for(c, topic, payload, timeout=10):
    ev = threading.Event()
    prev = c.on_message

    def on_msg(cl, ud, msg):
        prev(cl, ud, msg)
        if msg.topic == topic and msg.payload == payload:
            ev.set()
    c.on_message = on_msg
    with c.lock:
        seen = (topic, payload) in c.msgs
    assert seen or ev.wait(timeout), "marker %s %r never arrived" % (topic, payload)
    c.on_message = prev
    with c.lock:
        return list(c.msgs)


def _topics(msgs):
    return [(t, p) for t, p in msgs]


def test_generated_material_is_what_mosquitto_checks(broker):
    with open(broker.path("passwd")) as f:
        lines = dict(ln.strip().split(":", 1) for ln in f if ln.strip())
    assert set(lines) == {"backend", "cp-1", "cp-2"}
    for ident, pw in broker.passwords.items():
        assert lines[ident].startswith("$7$%d$" % credentials.ITERATIONS)
        assert credentials.pw_check(lines[ident], pw)
        assert not credentials.pw_check(lines[ident], pw + "x")
    for name in ("passwd", "credentials.json", "ca.key", "server.key", "devices/cp-1.key.der",
                 "devices/cp-1.json"):
        assert os.stat(broker.path(name)).st_mode & 0o077 == 0, name     # secrets: owner only
    with open(broker.path("devices/cp-1.json")) as f:
        mq = json.load(f)["mqtt"]
    assert mq["user"] == "cp-1" and mq["password"] == broker.passwords["cp-1"] and mq["tls"] is True
    for ident in broker.passwords:                                     # the broker accepts each of them
        assert broker.client(ident).rc == 0, ident


def test_regenerating_keeps_passwords_and_ca(broker, tmp_path):
    out = str(tmp_path / "m")
    first = credentials.generate(out, ["a-1"])
    with open(os.path.join(out, "ca.pem"), "rb") as f:
        ca = f.read()
    second = credentials.generate(out, ["a-2"])
    assert second["a-1"] == first["a-1"] and "a-2" in second
    with open(os.path.join(out, "ca.pem"), "rb") as f:
        assert f.read() == ca
    with open(os.path.join(out, "acl")) as f:
        acl = f.read()
    assert "user a-1\ntopic write evse/a-1/+\ntopic read evse/a-1/cmd/#" in acl
    assert "user a-2\n" in acl
    for bad in (["a/b"], ["+"], ["backend"], []):
        with pytest.raises(ValueError):
            credentials.generate(out, bad)


def test_refused_connections(broker):
    assert broker.client("cp-1", password="wrong").rc not in (0, None)       # not authorized
    assert broker.client("nobody", password="x", cert_of="cp-1").rc not in (0, None)
    assert broker.client("cp-1", ca=broker.path("server.pem")).rc is None    # server not trusted
    assert broker.client("cp-1", cert=False, timeout=3).rc is None            # no client certificate


def test_second_device_cannot_command_the_first(broker):
    dev1, dev2, be = broker.client("cp-1"), broker.client("cp-2"), broker.client("backend")
    _sub(dev1, "evse/cp-1/cmd/#")
    for topic in ("evse/cp-1/cmd/set_config", "evse/cp-1/cmd/update_firmware", "evse/cp-1/cmd/reset"):
        _pub(dev2, topic, b'{"id": "evil", "changes": {"max_current_a": 80}}')
    _pub(dev1, "evse/cp-1/cmd/reset", b'{"id": "self"}')                      # not even its own cmd/
    _pub(be, "evse/cp-1/cmd/pause", b'{"id": "marker"}')
    got = _wait_for(dev1, "evse/cp-1/cmd/pause", b'{"id": "marker"}')
    assert _topics(got) == [("evse/cp-1/cmd/pause", b'{"id": "marker"}')], got


def test_second_device_cannot_read_the_firsts_commands(broker):
    dev1, dev2, be = broker.client("cp-1"), broker.client("cp-2"), broker.client("backend")
    _sub(dev1, "evse/cp-1/cmd/#")
    _sub(dev2, "evse/cp-1/cmd/#")
    _sub(dev2, "evse/#")
    _sub(dev2, "evse/cp-2/cmd/#")
    _pub(be, "evse/cp-1/cmd/authorize", b'{"id": 1, "tag": "secret-tag"}')
    _pub(be, "evse/cp-2/cmd/pause", b'{"id": "m2"}')
    _wait_for(dev1, "evse/cp-1/cmd/authorize", b'{"id": 1, "tag": "secret-tag"}')
    got = _wait_for(dev2, "evse/cp-2/cmd/pause", b'{"id": "m2"}')
    assert [t for t, _ in got] == ["evse/cp-2/cmd/pause"], got


def test_second_device_cannot_impersonate_the_first(broker):
    dev1, be = broker.client("cp-1"), broker.client("backend")
    _sub(be, "evse/#")
    # same client id as the real device: the broker uses the user name instead,
    # so the real device's session is not taken over
    dev2 = broker.client("cp-2", client_id="cp-1")
    for suffix in ("status", "state", "session", "reply", "firmware"):
        _pub(dev2, "evse/cp-1/" + suffix, b'{"online": false, "from": "cp-2"}')
    _pub(dev2, "evse/cp-2/status", b'{"online": true}')
    got = _wait_for(be, "evse/cp-2/status", b'{"online": true}')
    assert not [m for m in got if m[0].startswith("evse/cp-1/")], got
    assert dev1.is_connected()
    _pub(dev1, "evse/cp-1/status", b'{"online": true, "from": "cp-1"}')       # the real one still can
    _wait_for(be, "evse/cp-1/status", b'{"online": true, "from": "cp-1"}')


# ---- the device's own MQTT link on the unix port ------------------------------------------

_DEVICE = r"""
import sys, os, time, json
from firmware.mqtt import Link
with open(sys.argv[1]) as f:
    a = json.load(f)
links = {}
got = {}
for name, cfg in a["links"].items():
    l = Link(cfg, a["device"], time.ticks_ms())
    got[name] = []
    l.on_message = (lambda n: lambda cmd, p: got[n].append([cmd, p.decode()]))(name)
    l.publish("status", {"from": name}, retain=True)
    links[name] = l

def pump(ms, stop=None):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        for l in links.values():
            l.poll(time.ticks_ms())
        if stop and stop():
            return True
        time.sleep_ms(2)
    return False

pump(10000, lambda: all(l.connected and not l.pending() for l in links.values()) or
     not all(l.attempts < 2 for l in links.values()))
print("@@READY " + json.dumps({n: [l.connected, l.last_error] for n, l in links.items()}))
def marker():
    try:
        return bool(os.stat(a["marker"]))
    except OSError:
        return False

pump(15000, marker)
pump(300)
print("@@GOT " + json.dumps(got))
for l in links.values():
    l.close()
"""


def test_device_link_tls_client_cert_and_acl(broker, tmp_path):
    be = broker.client("backend")
    _sub(be, "evse/#")
    d = broker.dir
    base = {"host": "127.0.0.1", "port": broker.port, "tls": True, "ca": d + "/ca.der",
            "keepalive": 30, "client_id": None}
    links = {
        "real": dict(base, user="cp-1", password=broker.passwords["cp-1"],
                     cert=d + "/devices/cp-1.crt.der", key=d + "/devices/cp-1.key.der"),
        # a board carrying cp-2's credentials and certificate, configured as device cp-1
        "impostor": dict(base, user="cp-2", password=broker.passwords["cp-2"],
                         cert=d + "/devices/cp-2.crt.der", key=d + "/devices/cp-2.key.der"),
    }
    marker = str(tmp_path / "done")
    script, args = str(tmp_path / "device.py"), str(tmp_path / "args.json")
    with open(script, "w") as f:
        f.write(_DEVICE)
    with open(args, "w") as f:
        json.dump({"device": "cp-1", "links": links, "marker": marker}, f)
    p = subprocess.Popen([mpunix.binary(), "-X", "heapsize=256K", script, args],
                         env=mpunix.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("@@READY "), line + p.stderr.read()
        ready = json.loads(line[8:])
        assert ready["real"] == [True, None], ready
        # the impostor's login is valid, so it is connected, but nothing it says counts
        _wait_for(be, "evse/cp-1/status", b'{"from": "real"}')
        _pub(be, "evse/cp-1/cmd/pause", b'{"id": "c1"}')
        _pub(be, "evse/cp-2/status", b'{"marker": 1}')
        got = _wait_for(be, "evse/cp-2/status", b'{"marker": 1}')
        assert (("evse/cp-1/status", b'{"from": "impostor"}') not in got), got
        with open(marker, "w"):
            pass
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    line = [ln for ln in out.splitlines() if ln.startswith("@@GOT ")]
    assert line, out + err
    got = json.loads(line[0][6:])
    assert got["real"] == [["pause", '{"id": "c1"}']], got
    assert got["impostor"] == [], got
