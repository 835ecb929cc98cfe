# mptest: heapsize=128K timeout=120
# Heap: the agent (charging core, commands, sim HAL, LittleFS) with firmware/config.py
# and ota/health.py imported for a moment each, on the 64-bit unix port.
# The modules the agent needs only at start (the protected config store, the
# boot report of the last update) or for one command (get_config/set_config)
# are not kept loaded: their heap goes back to the running agent; nor are the
# command handler (per command) and HA discovery (per round): firmware/lazy.py.
# The 32-bit lane passes this module at 96K (mp64 needs 128K).
import sys
import time
import mptest
import flashrig
from firmware import agent
from firmware.agent import Agent
from firmware.hal.sim import SimBoard

R = None
_MNT = "/t_agmod"
_TMP = None


def setup():
    global R, _TMP
    R, _TMP = flashrig.flash_up(_MNT, "evagmod")


def teardown():
    flashrig.flash_down(_MNT, _TMP)


def _cfg():
    return {"device_id": "t1", "board": "sim", "max_current_a": 32, "fallback_current_a": 6,
            "telemetry_ms": 10000}


class _NoJob:
    # an updater without a job (start() reads the boot report when one is built)
    def poll(self, now, idle, window):
        return False

    def status(self):
        return "Idle"


class _Link:
    # the part of firmware.mqtt.Link that the agent and HA discovery use
    connected = True
    ups = 1
    on_message = session_log = None

    def __init__(self):
        self.sent = []
        self.extra = None

    def subscribe_extra(self, topic, fn):
        self.extra = (topic, fn)

    def send_now(self, topic, payload, retain=False):
        self.sent.append(topic)
        return True

    def poll(self, now):
        pass

    def publish(self, *a):
        pass

    def pending(self):
        return 0

    def close(self, now=None):
        self.connected = False


def test_install_step_suspends_the_links():
    # the update job calls before_install right before the unpack: the agent
    # suspends its links (buffers released, reconnect at once after), and a
    # reset waits for a link that is reconnecting after it (within its delay)
    link = _Link()
    calls = []
    link.suspend = lambda now: calls.append(("mqtt", now))
    link.resuming = False
    class _OnDemand(_NoJob):
        # stands in for firmware.ota.ondemand (the real one imports boot.py from
        # source, beyond this module's heap on mp64): records what the agent passes
        def __init__(self, *a, **kw):
            self.kw = kw

        def resume(self):
            pass

    class _Mod:
        OnDemandUpdater = _OnDemand

    had = sys.modules.get("firmware.ota.ondemand")
    sys.modules["firmware.ota.ondemand"] = _Mod
    try:
        a = Agent(SimBoard(), _cfg(), R, {"slot": "a", "version": "1.0.0"}, link=link,
                  sessions=None, health=None, ha=None)
    finally:
        if had is None:
            sys.modules.pop("firmware.ota.ondemand", None)
        else:
            sys.modules["firmware.ota.ondemand"] = had
    a.updater.kw["before_install"]()   # what OnDemandUpdater passes on to the UpdateJob
    mptest.eq(calls, [("mqtt", a._now)])
    # the install step feeds the watchdog on its progress (updater `feed`), not a hung agent
    if a.board.wdt_timeout_ms is None:
        a.board.wdt_start(3000)
    n = a.board.wdt_feeds
    a.updater.kw["feed"]()
    mptest.eq(a.board.wdt_feeds, n + 1)
    a.hang()
    a.updater.kw["feed"]()
    mptest.eq(a.board.wdt_feeds, n + 1)
    a._hung = False
    link.connected = False
    link.resuming = True
    link.pending = lambda: 1
    a._on_reset("soft")
    a._t_reset(a._now)      # resuming with messages queued: not yet
    mptest.true(not a._resetting, "reset waits for the reconnecting link")
    mptest.raises(SystemExit, a._t_reset, time.ticks_add(a._now, 2000))   # the delay is over


def test_start_up_readers_not_kept_loaded():
    # the protected config store and the boot report are read at start, the
    # store again only by get_config/set_config: their modules are not kept
    # loaded (firmware/config.py alone is ~10 KB of heap on mp32, docs/memory.md)
    mptest.eq(agent.load_config(R)["max_current_a"], 0, "empty flash: the fail-safe configuration")
    mptest.true("firmware.config" not in sys.modules, "config store dropped after load_config")
    a = Agent(SimBoard(), _cfg(), R, {"slot": "a", "version": "1.0.0"}, link=None,
              updater=_NoJob(), sessions=None, health=None)
    a.start()
    mptest.true("firmware.ota.health" not in sys.modules, "boot report reader dropped after start")
    mptest.true("firmware.ota.job" not in sys.modules, "job file helpers dropped after start")
    for name, p in (("get_config", {"id": 1}),
                    ("set_config", {"id": 2, "changes": {"telemetry_ms": 5000}})):
        rep = a.command(name, p)
        mptest.eq(rep["id"], p["id"])
        mptest.true("firmware.config" not in sys.modules, "config store dropped after", name)
    mptest.eq(rep["ok"], False, "no valid configuration on this flash: set_config refused", rep)


def test_command_handler_loaded_per_command_without_heap_growth():
    # firmware/commands.py (~6 KB on mp32) is loaded for each command and
    # dropped after it (firmware/lazy.py): 100 commands in a row leave no
    # module behind, no MemoryError, and the live heap does not grow
    import gc
    a = Agent(SimBoard(), _cfg(), R, {"slot": "a", "version": "1.0.0"}, link=None,
              updater=_NoJob(), sessions=None, health=None)
    mptest.true("firmware.commands" not in sys.modules, "not loaded by the agent's start")
    mem = []
    for i in range(100):
        rep = a.command("set_limit" if i % 3 else "bogus", {"id": i, "amps": 10})
        mptest.eq(rep["ok"], bool(i % 3), rep)
        mptest.true("firmware.commands" not in sys.modules, "dropped after command", i)
        if i in (9, 99):
            gc.collect()
            mem.append(gc.mem_alloc())
    mptest.true(mem[1] - mem[0] <= 256, "live heap grew over 90 commands", mem)
    c = a.commands
    mptest.eq((c.handled, c.refused, c.unanswered), (100, 34, 0))
    mptest.eq(c.last_error, "unknown command: bogus")
    mptest.eq(a.command("pause", "{}"), None, "no id: no reply")
    mptest.eq(c.unanswered, 1)


def test_ha_discovery_loaded_per_round():
    # firmware/hadisco.py is loaded while a round of discovery configs goes
    # out (after a connect, on HA's birth message) and dropped after it
    from firmware.lazy import Discovery
    link = _Link()
    link.connected = False
    d = Discovery(link, "t1", "sim", "1.0.0", "a", 16)
    mptest.eq(link.extra[0], "homeassistant/status")
    d.poll()
    mptest.true("firmware.hadisco" not in sys.modules, "not loaded while disconnected")
    link.connected = True
    for n in range(40):
        d.poll()
        if d.rounds:
            break
    mptest.eq(d.rounds, 1)
    count = len(link.sent)
    mptest.true(count > 10 and len(set(link.sent)) == count, link.sent)
    mptest.true("firmware.hadisco" not in sys.modules, "dropped after the round")
    for _ in range(5):
        d.poll()
    mptest.eq(len(link.sent), count, "same connection: nothing again")
    link.extra[1](b"online")          # HA's birth message: all again
    for _ in range(40):
        d.poll()
    mptest.eq((d.rounds, len(link.sent)), (2, 2 * count))
    link.ups += 1                     # a reconnect: all again
    for _ in range(40):
        d.poll()
    mptest.eq((d.rounds, len(link.sent), d.loads), (3, 3 * count, 3))
    mptest.true("firmware.hadisco" not in sys.modules)
    mptest.true('"max":16,' in d.payload(11) and "firmware.hadisco" not in sys.modules)



def test_session_log_loaded_while_records_wait():
    # firmware/sessionlog.py is held only while finished-session records
    # wait on flash for their PUBACK (firmware/lazy.py Sessions)
    from firmware.lazy import Sessions
    s = Sessions(R)
    mptest.eq(len(s), 0)
    mptest.true("firmware.sessionlog" not in sys.modules, "empty log: not loaded")
    seq = s.append({"id": "s1", "energy_wh": 10.0})
    mptest.true("firmware.sessionlog" in sys.modules and len(s) == 1)
    h = s.peek_line()
    mptest.eq(h[0], seq)
    mptest.eq(s.ack(seq + 1), False, "not the head: nothing acked")
    s2 = Sessions(R)      # a reboot while one waits: loaded from flash
    mptest.eq((len(s2), s2.peek_line()[0]), (1, seq))
    s2 = None
    mptest.eq(s.ack(seq), True)
    mptest.eq(len(s), 0)
    mptest.true("firmware.sessionlog" not in sys.modules, "dropped after the last PUBACK")
    seq2 = s.append({"id": "s2", "energy_wh": 5.0})
    mptest.eq(seq2, seq + 1, "seq goes on across a rebuild")
    mptest.eq(s.pop()["id"], "s2")
    mptest.eq((len(s), s.loads, s.peek_line(), s.ack()), (0, 3, None, False))
    mptest.true("firmware.sessionlog" not in sys.modules)
    a = Agent(SimBoard(), _cfg(), R, {"slot": "a", "version": "1.0.0"}, link=None,
              updater=_NoJob(), health=None)
    mptest.true(isinstance(a.sessions, Sessions) and "firmware.sessionlog" not in sys.modules)


def test_update_firmware_starts_after_the_command_handler_is_dropped():
    # update_firmware: the updater starts (the OTA chain loads) only once
    # firmware/commands.py is dropped again; what start() refuses is the reply
    seen = []

    class _Upd(_NoJob):
        def start(self, req):
            seen.append(("firmware.commands" in sys.modules, req["requestId"]))
            if req["requestId"] == 2:
                raise ValueError("busy: an installed update awaits reboot/confirmation")
            if req["requestId"] == 3:
                raise MemoryError("chain")

    a = Agent(SimBoard(), _cfg(), R, {"slot": "a", "version": "1.0.0"}, link=None,
              updater=_Upd(), sessions=None, health=None)
    req = {"location": "http://127.0.0.1:1/x.img", "retrieveDateTime": "2020-01-01T00:00:00Z"}
    r1 = a.command("update_firmware", dict(req, id="u1", requestId=1))
    r2 = a.command("update_firmware", dict(req, id="u2", requestId=2))
    r3 = a.command("update_firmware", dict(req, id="u3", requestId=3))
    r4 = a.command("update_firmware", dict(req, id="u4", requestId="x"))
    mptest.eq(seen, [(False, 1), (False, 2), (False, 3)], "started without the handler loaded")
    mptest.eq(r1, {"id": "u1", "ok": True})
    mptest.eq(r2, {"id": "u2", "ok": False,
                   "error": "busy: an installed update awaits reboot/confirmation"})
    mptest.eq(r3, {"id": "u3", "ok": False, "error": "internal error: MemoryError"})
    mptest.eq(r4["ok"], False, "a bad request is refused by the handler, start never called")
    mptest.eq((a.commands.handled, a.commands.refused), (4, 3))
    mptest.eq(a.commands.last_error, r4["error"])
