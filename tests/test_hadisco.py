"""Home Assistant MQTT discovery (firmware/hadisco.py) from a virtual board on
the real test broker (mosquitto, else amqtt), read by a paho subscriber the
way Home Assistant reads it: every config is JSON with the keys HA requires,
its templates (rendered with Jinja2, as HA does) give the board's real
values, the number's command changes the limit on the board (never above the
installer's rating), the buttons pause/resume/authorize, and HA's birth
message makes the board publish everything again. Waits are conditions
with timeouts."""
import json
import threading
import time

import jinja2
import pytest

from tests.prep import broker as B
from tests.test_mqtt_docs import doc_examples, same_shape
from tools.vboard import VBoard

DEV = "ha-1"
RATING = 16
COMPONENTS = {"sensor", "number", "button"}
EXPECTED = {
    "sensor": {"state", "offered_current", "current", "power", "voltage", "session_energy", "energy",
               "temperature", "fault", "firmware_status", "firmware_version"},
    "number": {"current_limit"},
    "button": {"pause", "resume", "authorize"},
}
# what HA needs per component (homeassistant/components/mqtt/<component>.py schemas)
REQUIRED = {"sensor": {"state_topic"}, "number": {"command_topic"}, "button": {"command_topic"}}
COMMON = {"name", "unique_id", "availability", "device"}


class Recorder:
    """A paho subscriber (the backend's credentials) that keeps every message."""

    def __init__(self, port, topics):
        import paho.mqtt.client as mqtt
        self.lock = threading.Lock()
        self.msgs = []
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-test-%d" % id(self))
        c.username_pw_set(B.BACKEND_USER, B.BACKEND_PASSWORD)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe([(t, 1) for t in topics])
        c.on_subscribe = lambda *a: self.ready.set()
        c.on_message = self._on
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        assert self.ready.wait(10), "recorder did not subscribe"
        self.c = c

    def _on(self, client, userdata, m):
        with self.lock:
            self.msgs.append((m.topic, m.payload.decode(), bool(m.retain)))

    def since(self, n=0, prefix=""):
        with self.lock:
            return [m for m in self.msgs[n:] if m[0].startswith(prefix)]

    def mark(self):
        with self.lock:
            return len(self.msgs)

    def last(self, topic):
        for t, p, r in reversed(self.since()):
            if t == topic:
                return p
        return None

    def publish(self, topic, payload, retain=False):
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def wait(cond, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def configs(rec, since=0):
    """{(component, object): (payload dict, retained)} of our node, latest each."""
    out = {}
    for t, p, r in rec.since(since, "homeassistant/"):
        parts = t.split("/")
        if len(parts) == 5 and parts[2] == DEV and parts[4] == "config":
            out[(parts[1], parts[3])] = (json.loads(p), r)
    return out


def all_out(rec, since=0):
    c = configs(rec, since)
    return c if len(c) == sum(len(v) for v in EXPECTED.values()) else None


_env = jinja2.Environment()


def render(template, payload_text):
    """value_template as HA renders it: value and value_json."""
    try:
        vj = json.loads(payload_text)
    except ValueError:
        vj = None
    return _env.from_string(template).render(value=payload_text, value_json=vj).strip()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    br = B.Broker(str(tmp_path_factory.mktemp("broker")))
    br.start()
    rec = Recorder(br.port, ["homeassistant/#", "evse/%s/#" % DEV])
    board = VBoard(str(tmp_path_factory.mktemp("vb") / DEV), id=DEV, broker="127.0.0.1:%d" % br.port,
                   config={"max_current_a": RATING, "telemetry_ms": 1000,
                           "mqtt": {"user": B.USER, "password": B.PASSWORD}}).start()
    try:
        board.wait_output("agent: " + DEV, 60)
        wait(lambda: all_out(rec), 60, "all discovery configs")
        yield {"board": board, "rec": rec, "broker": br}
    finally:
        board.stop()
        rec.stop()
        br.stop()


def test_every_config_is_json_with_the_keys_home_assistant_requires(rig):
    rec, board = rig["rec"], rig["board"]
    late = Recorder(rig["broker"].port, ["homeassistant/#"])   # HA started after the board
    try:
        got = wait(lambda: all_out(late), 20, "retained configs for a late subscriber")
    finally:
        late.stop()
    assert {k for k in got} == {(c, o) for c, objs in EXPECTED.items() for o in objs}
    g = board.get()
    uids = set()
    for (comp, obj), (cfg, retained) in got.items():
        assert retained, (comp, obj)
        assert comp in COMPONENTS
        missing = (COMMON | REQUIRED[comp]) - set(cfg)
        assert not missing, (comp, obj, missing)
        assert isinstance(cfg["name"], str) and cfg["name"]
        assert cfg["unique_id"] not in uids
        uids.add(cfg["unique_id"])
        for k, v in cfg.items():
            if k.endswith("_topic"):
                assert v.startswith("evse/%s/" % DEV), (k, v)
        dev = cfg["device"]
        assert dev["identifiers"] == ["evse_" + DEV]
        assert dev["manufacturer"] and dev["model"] and dev["name"]
        assert dev["sw_version"] == "%s (slot %s)" % (g["version"], g["slot"])
        av = cfg["availability"]
        assert [a["topic"] for a in av] == ["evse/%s/status" % DEV]
        assert render(av[0]["value_template"], rec.last("evse/%s/status" % DEV)) == "online"
        assert render(av[0]["value_template"], '{"online": false}') == "offline"
    energy = got[("sensor", "energy")][0]
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == \
        ("energy", "total_increasing", "Wh")
    num = got[("number", "current_limit")][0]
    assert (num["min"], num["max"]) == (0, RATING)
    assert num["command_topic"] == "evse/%s/cmd/set_limit" % DEV


def test_sensor_templates_give_the_boards_values(rig):
    rec, board = rig["rec"], rig["board"]
    board.control("plug", state="C", max_current_a=32)
    g = board.wait_for(lambda: (lambda x: x if x["relay"] and x["current_a"] > 0 else None)(board.get()),
                       20, what="charging")
    mark = rec.mark()
    wait(lambda: any(t.endswith("/telemetry") for t, p, r in rec.since(mark)), 20, "telemetry")
    cfgs = {o: c for (comp, o), (c, r) in all_out(rec).items() if comp == "sensor"}
    vals = {o: render(c["value_template"], rec.last(c["state_topic"])) for o, c in cfgs.items()
            if rec.last(c["state_topic"]) is not None}
    assert vals["state"] == "C"
    assert float(vals["offered_current"]) == g["offered_a"] == RATING
    assert float(vals["current"]) > 0 and float(vals["voltage"]) > 100 and float(vals["power"]) > 0
    assert float(vals["energy"]) >= 0 and float(vals["session_energy"]) >= 0
    assert vals["fault"] == "none"
    assert vals["firmware_version"] == g["version"]
    for o in ("offered_current", "current", "power", "voltage", "energy", "session_energy"):
        float(vals[o])          # numeric sensors render numbers


def test_number_command_sets_the_limit_within_the_rating(rig):
    rec, board = rig["rec"], rig["board"]
    board.control("plug", state="C", max_current_a=32)
    num = all_out(rec)[("number", "current_limit")][0]
    tpl = _env.from_string(num["command_template"])
    mark = rec.mark()
    rec.publish(num["command_topic"], tpl.render(value=10))
    board.wait_for(lambda: board.get()["offered_a"] == 10, 20, what="offer 10 A")
    st = wait(lambda: [p for t, p, r in rec.since(mark) if t == num["state_topic"]
                       and render(num["value_template"], p) == "10"], 20, "state 10 A")
    assert st
    reply = wait(lambda: [json.loads(p) for t, p, r in rec.since(mark) if t.endswith("/reply")], 20, "reply")
    assert reply[0]["ok"] is True, reply
    rec.publish(num["command_topic"], tpl.render(value=RATING + 10))   # above the rating: capped
    board.wait_for(lambda: board.get()["offered_a"] == RATING, 20, what="capped at the rating")


def test_buttons_pause_resume_and_authorize(rig):
    rec, board = rig["rec"], rig["board"]
    got = all_out(rec)
    mark = rec.mark()
    for obj, paused in (("pause", True), ("resume", False)):
        b = got[("button", obj)][0]
        rec.publish(b["command_topic"], b["payload_press"])
        board.wait_for(lambda: board.get()["paused"] is paused, 20, what=obj)
    a = got[("button", "authorize")][0]
    rec.publish(a["command_topic"], a["payload_press"])
    replies = wait(lambda: (lambda r: r if len(r) >= 3 else None)(
        [json.loads(p) for t, p, _ in rec.since(mark) if t == "evse/%s/reply" % DEV]), 20, "3 replies")
    assert [(r["id"], r["ok"]) for r in replies] == [("ha-pause", True), ("ha-resume", True),
                                                     ("ha-authorize", True)]


def test_birth_message_makes_the_board_publish_again(rig):
    rec = rig["rec"]
    mark = rec.mark()
    rec.publish("homeassistant/status", "offline")
    time.sleep(0.5)
    assert configs(rec, mark) == {}                       # only `online` does it
    rec.publish("homeassistant/status", "online")
    again = wait(lambda: all_out(rec, mark), 30, "configs again after the birth message")
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in all_out(rec).items()}


def test_docs_example_matches_the_number_config(rig):
    doc = doc_examples()["Home Assistant discovery"]
    real = all_out(rig["rec"])[("number", "current_limit")][0]
    assert len(doc) == 1
    assert same_shape(doc[0], real, "current_limit") == []
    for k in ("value_template", "command_template", "min", "step", "mode"):
        assert doc[0][k] == real[k], k
    assert doc[0]["availability"][0]["value_template"] == real["availability"][0]["value_template"]
