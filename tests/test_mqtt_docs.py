"""docs/mqtt.md's JSON examples agree with what the device sends: a virtual
board on the real test broker (mosquitto, else amqtt) runs a session, is
unplugged, answers commands; a paho subscriber records its payloads, and
every example in the doc is compared with the real one of its topic: the
same keys (nested objects too), compatible types, and the values that the
example's situation fixes (a normal boot's status reason, the slot's
spelling, the reason of a session ended by unplugging, the error text of a
refused command, the configuration keys of get_config)."""
import json
import os
import re
import threading
import time

import pytest

from tests.prep import broker as B
from tools.vboard import VBoard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "mqtt.md")
DEV = "doc-1"


def doc_examples(path=DOC):
    """{heading: [example objects]} of the ```json blocks under each '##'/'###' heading
    (a block holds one object, or one per line)."""
    out, heading, block = {}, None, None
    with open(path) as f:
        for line in f:
            if block is not None:
                if line.startswith("```"):
                    text = "".join(block)
                    try:
                        objs = [json.loads(text)]
                    except ValueError:
                        objs = [json.loads(ln) for ln in block if ln.strip()]
                    out.setdefault(heading, []).extend(objs)
                    block = None
                else:
                    block.append(line)
            elif line.startswith("```json"):
                block = []
            elif line.startswith("## ") or line.startswith("### "):
                heading = line.lstrip("#").split("(")[0].strip()
    return out


def doc_command_replies(path=DOC):
    """{command name: reply object} from the 'Examples:' block of commands."""
    text = open(path).read()
    m = re.search(r"Examples:\n```\n(.*?)```", text, re.S)
    assert m, "docs/mqtt.md: no Examples: block of commands"
    out = {}
    for part in re.split(r"\n(?=evse/)", m.group(1)):
        name = re.match(r"evse/[^/]+/cmd/(\w+)", part).group(1)
        reply = part.split("-> reply", 1)[1]
        out[name] = json.loads(reply)
    return out


def same_shape(doc, real, where):
    """Keys equal, nested objects alike, types compatible (null goes with anything)."""
    errs = []
    if isinstance(doc, dict) and isinstance(real, dict):
        if set(doc) != set(real):
            errs.append("%s: doc keys %s, device keys %s" % (where, sorted(doc), sorted(real)))
        for k in set(doc) & set(real):
            errs += same_shape(doc[k], real[k], "%s.%s" % (where, k))
    elif doc is not None and real is not None:
        num = (int, float)
        if not (isinstance(doc, num) and isinstance(real, num) and not isinstance(doc, bool)
                and not isinstance(real, bool)) and type(doc) is not type(real):
            errs.append("%s: doc %r, device %r" % (where, doc, real))
        elif isinstance(doc, str) and len(real) == 1 and doc.islower() != real.islower():
            errs.append("%s: doc %r, device %r (case)" % (where, doc, real))
    return errs


class Recorder:
    def __init__(self, port):
        import paho.mqtt.client as mqtt
        self.lock = threading.Lock()
        self.msgs = []
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="doc-test-recorder")
        c.username_pw_set(B.BACKEND_USER, B.BACKEND_PASSWORD)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("evse/%s/#" % DEV, 1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = lambda cl, u, m: self._add(m.topic.split("/", 2)[2], m.payload)
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        assert ready.wait(10)
        self.c = c

    def _add(self, suffix, payload):
        with self.lock:
            self.msgs.append((suffix, json.loads(payload)))

    def get(self, suffix, cond=lambda m: True, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                hits = [m for s, m in self.msgs if s == suffix and cond(m)]
            if hits:
                return hits[-1]
            time.sleep(0.05)
        raise AssertionError("no %s payload from the board" % suffix)

    def publish(self, suffix, obj):
        self.c.publish("evse/%s/%s" % (DEV, suffix), json.dumps(obj), qos=1).wait_for_publish(5)

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The board's real payloads: {doc heading: payload}, {command: reply}."""
    br = B.Broker(str(tmp_path_factory.mktemp("broker")))
    br.start()
    rec = Recorder(br.port)
    board = VBoard(str(tmp_path_factory.mktemp("vb") / DEV), id=DEV, broker="127.0.0.1:%d" % br.port,
                   config={"telemetry_ms": 1000, "mqtt": {"user": B.USER, "password": B.PASSWORD}}).start()
    try:
        board.wait_output("agent: " + DEV, 60)
        rec.get("status")
        board.control("plug", state="C", max_current_a=16)
        state = rec.get("state", lambda m: m["session"] is not None and m["relay"])
        tele = rec.get("telemetry", lambda m: (m["current_a"] or 0) > 0)
        board.control("unplug")
        session = rec.get("session")
        rec.publish("cmd/set_limit", {"id": "c-17", "amps": 10, "ttl": 900})
        rec.publish("cmd/set_limit", {"id": "c-18", "amps": "lots"})
        rec.publish("cmd/get_config", {"id": "g1"})
        rec.publish("cmd/set_config", {"id": "s1", "changes": {"telemetry_ms": 5000}})
        rec.publish("cmd/update_firmware", {"id": 7, "requestId": 42, "retries": 0, "retryInterval": 60,
                                            "firmware": {"location": "http://127.0.0.1:1/evse-1.2.0.bin",
                                                         "retrieveDateTime": "2030-01-01T00:00:00Z"}})
        replies = {rid: rec.get("reply", lambda m, rid=rid: m["id"] == rid) for rid in ("c-17", "c-18", "g1", "s1", 7)}
        firmware = rec.get("firmware", lambda m: m["requestId"] == 42)
        yield {"payloads": {"status": rec.get("status"), "state": state, "telemetry": tele, "session": session,
                            "firmware": firmware, "reply": replies},
               "commands": {"set_limit": replies["c-17"], "get_config": replies["g1"],
                            "set_config": replies["s1"], "update_firmware": replies[7]}}
    finally:
        board.stop()
        rec.stop()
        br.stop()


def test_doc_has_an_example_for_every_device_topic():
    ex = doc_examples()
    for topic in ("status", "state", "telemetry", "session", "firmware", "reply"):
        assert ex.get(topic), "docs/mqtt.md has no JSON example under '### %s'" % topic


def test_json_examples_match_the_device(real):
    ex = doc_examples()
    pay = real["payloads"]
    errs = []
    for topic in ("status", "state", "telemetry", "session", "firmware"):
        for obj in ex[topic]:
            errs += same_shape(obj, pay[topic], topic)
    ok_doc, err_doc = ex["reply"]
    errs += same_shape(ok_doc, pay["reply"]["c-17"], "reply(ok)")
    errs += same_shape(err_doc, pay["reply"]["c-18"], "reply(error)")
    assert not errs, "docs/mqtt.md disagrees with the device:\n  " + "\n  ".join(errs)
    # the values the examples' situations fix
    st = ex["status"][0]
    assert (st["trial"], st["failed_version"]) == (False, None)       # a normal boot ...
    assert st["reason"] == pay["status"]["reason"]                      # ... has this reason
    assert ex["session"][0]["reason"] == pay["session"]["reason"] == "ev_disconnected"
    assert err_doc["error"] == pay["reply"]["c-18"]["error"]


def test_command_examples_match_the_device(real):
    doc = doc_command_replies()
    errs = []
    for name, rep in real["commands"].items():
        assert name in doc, name
        errs += same_shape(doc[name], rep, "reply to " + name)
    assert not errs, "docs/mqtt.md disagrees with the device:\n  " + "\n  ".join(errs)
