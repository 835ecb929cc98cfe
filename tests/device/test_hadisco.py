# mptest: heapsize=96K timeout=120
# Home Assistant discovery (firmware/hadisco.py) on the device side: the
# configs parse as JSON with the keys HA needs, they go out one per poll and
# only when the link has room, again after a reconnect and on HA's birth
# message (the agent's wiring: tests/device/test_agent.py). The
# broker round trip (paho subscriber, virtual board): tests/test_hadisco.py.
import gc
import json
import mptest
from firmware import hadisco


class Link:
    # what Discovery uses of firmware.mqtt.Link, recording instead of sending
    def __init__(self):
        self.connected = True
        self.ups = 1
        self.room = True
        self.sent = []
        self.keep = True             # payloads kept (else only topics: the heap is 96K)
        self.extra = None

    def subscribe_extra(self, topic, fn):
        self.extra = (topic, fn)

    def send_now(self, topic, payload, retain=False):
        if not (self.connected and self.room):
            return False
        self.sent.append((topic, payload if self.keep else None, retain))
        return True


def _disco(dev="evse-0001", **kw):
    link = Link()
    return link, hadisco.Discovery(link, dev, "sim", "1.2.0", "a", 20, **kw)


def _round(link, d):
    for _ in range(hadisco.COUNT + 3):
        d.poll()


def test_configs_are_json_with_the_keys_home_assistant_needs():
    link, d = _disco()
    _round(link, d)
    mptest.eq(len(link.sent), hadisco.COUNT)
    seen = set()
    for topic, payload, retain in link.sent:
        mptest.true(retain, topic)
        parts = topic.split("/")
        mptest.eq((parts[0], parts[2], parts[4]), ("homeassistant", "evse-0001", "config"), topic)
        c = json.loads(payload)
        for k in ("name", "unique_id", "availability", "device"):
            mptest.true(k in c, topic, k)
        need = "state_topic" if parts[1] == "sensor" else "command_topic"
        mptest.true(need in c, topic, need)
        mptest.true(c["unique_id"] not in seen, c["unique_id"])
        seen.add(c["unique_id"])
        mptest.eq(c["availability"][0]["topic"], "evse/evse-0001/status")
        mptest.eq(c["device"]["sw_version"], "1.2.0 (slot a)")
        mptest.eq(c["device"]["identifiers"], ["evse_evse-0001"])
        if parts[1] == "number":
            mptest.eq((c["min"], c["max"], c["command_topic"]), (0, 20, "evse/evse-0001/cmd/set_limit"))


def test_one_config_per_poll_and_only_with_room():
    link, d = _disco()
    link.keep = False
    link.room = False
    d.poll()
    d.poll()
    mptest.eq(link.sent, [])
    link.room = True
    d.poll()
    mptest.eq(len(link.sent), 1)
    link.connected = False
    d.poll()
    mptest.eq(len(link.sent), 1)
    link.connected = True
    for _ in range(hadisco.COUNT * 2):
        d.poll()
    mptest.eq(len(link.sent), hadisco.COUNT)
    mptest.eq(d.rounds, 1)
    mptest.eq(len(set(t for t, p, r in link.sent)), hadisco.COUNT)


def test_republished_after_reconnect_and_on_birth_only():
    link, d = _disco()
    link.keep = False
    _round(link, d)
    link.ups += 1                      # the link reconnected
    _round(link, d)
    mptest.eq(len(link.sent), 2 * hadisco.COUNT)
    topic, fn = link.extra
    mptest.eq(topic, "homeassistant/status")
    fn(b"offline")
    _round(link, d)
    mptest.eq(len(link.sent), 2 * hadisco.COUNT)
    fn(b"online")
    _round(link, d)
    mptest.eq(len(link.sent), 3 * hadisco.COUNT)
    mptest.eq(d.rounds, 3)


def test_node_id_and_free_texts_are_safe():
    link, d = _disco('ev.1', prefix="ha")
    _round(link, d)
    t, p, r = link.sent[0]
    mptest.true(t.startswith("ha/sensor/ev_1/"), t)
    c = json.loads(p)
    mptest.eq(c["availability"][0]["topic"], "evse/ev.1/status")
    link2 = Link()
    d2 = hadisco.Discovery(link2, "x", 'b"oard\\', 'v"1', None, 16.5)
    _round(link2, d2)
    c = json.loads(link2.sent[-4][1])   # the number
    mptest.eq((c["device"]["model"], c["device"]["sw_version"], c["max"]), ('evse-agent b"oard\\', 'v"1', 16))


def test_a_round_keeps_no_config_in_ram():
    link, d = _disco()
    link.send_now = lambda t, p, r=False: True      # dropped at once, as the real link's buffer does
    d.poll()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(hadisco.COUNT + 2):
        d.poll()
    gc.collect()
    grown = gc.mem_alloc() - before
    print("heap kept after a round: %d bytes" % grown)
    mptest.true(grown < 256, grown)
    mptest.eq(d.next, hadisco.COUNT)


def test_config_refuses_a_non_boolean_and_defaults_on():
    from firmware import config
    mptest.eq(config.DEFAULTS["ha_discovery"], True)
    mptest.eq(config.validate({"ha_discovery": 1}), "ha_discovery must be true or false")
    mptest.eq(config.validate({"ha_discovery": False}), None)
