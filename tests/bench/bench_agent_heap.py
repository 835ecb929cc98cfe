# bench: heapsize=256K
# What a running agent holds when idle (MQTT configured, broker down, no
# session, no update job), as .mpy loaded into RAM: each module it keeps
# imported (in the order the agent imports them) and each long-lived object
# (a second instance of it, built after the agent), then the whole agent
# after 300 control periods. This is the heap the agent cannot avoid holding
# (docs/memory.md "What a running agent holds"); the modules it loads only
# for a moment (config store, boot report, command handler, HA discovery,
# session log, OTA chain) are listed as "loaded on demand" with what they cost while loaded.
import gc
import os
import sys
from benchlib import report

ROOT = "/tmp/evse-bench-agent-heap-%d/" % (id(os) & 0xFFFFFF)

# what firmware.agent keeps imported (tests/device/test_agent_modules.py checks it)
HELD = ("boot", "firmware.hal.sim", "firmware.evse", "firmware.report", "firmware.agent",
        "umqtt.simple", "firmware.mqtt", "firmware.lazy",
        "firmware.ota.ondemand")
# loaded only while needed, dropped after
ON_DEMAND = ("firmware.config", "firmware.sessionlog", "firmware.ota.job", "firmware.ota.health", "firmware.commands",
             "firmware.hadisco")


def _rmtree(p):
    try:
        names = os.listdir(p)
    except OSError:
        return
    for n in names:
        q = p.rstrip("/") + "/" + n
        try:
            os.remove(q)
        except OSError:
            _rmtree(q)
    try:
        os.rmdir(p)
    except OSError:
        pass


def _delta(fn):
    gc.collect()
    a0 = gc.mem_alloc()
    keep = fn()
    gc.collect()
    n = gc.mem_alloc() - a0
    return n, keep


def _forget(names):
    for m in names:
        sys.modules.pop(m, None)
        pkg = sys.modules.get(m.rpartition(".")[0])
        name = m.rpartition(".")[2]
        if pkg is not None and hasattr(pkg, name):
            delattr(pkg, name)


def main():
    os.mkdir(ROOT)
    try:
        run()
    finally:
        _rmtree(ROOT)


def _cfg():
    from firmware import config
    c = config.merge(config.DEFAULTS, {"device_id": "bench1",
                                       "mqtt": {"host": "127.0.0.1", "port": 1}})
    return c


def run():
    cfg = _cfg()
    _forget([k for k in sys.modules if k.startswith("firmware.")])
    gc.collect()
    base = gc.mem_alloc()
    mods = {}
    for m in HELD:
        n, _ = _delta(lambda: __import__(m))
        mods[m] = n
    # what loading a module costs while loaded (after the held set, as the
    # agent loads it), then dropped with whatever it brought along
    demand = {}
    for m in ON_DEMAND:
        had = list(sys.modules)
        n, _ = _delta(lambda: __import__(m))
        demand[m] = n
        _forget([k for k in sys.modules if k not in had])
    import boot
    boot.write_record(boot.Record(), ROOT)
    gc.collect()
    a0 = gc.mem_alloc()
    from firmware.hal.sim import SimBoard
    from firmware.agent import Agent
    b = SimBoard()
    a = Agent(b, cfg, ROOT, {"version": (1, 0, 0, 0), "slot": "a"}, health=None)
    a.start()
    for _ in range(300):
        b.advance(20)
        a.tick(b.ticks_ms())
    gc.collect()
    objs = gc.mem_alloc() - a0
    total = gc.mem_alloc() - base
    # a second instance of each long-lived object: its own size
    from firmware import mqtt, evse, lazy
    from firmware.ota import ondemand
    parts = (
        ("MQTT link (receive/send buffers, umqtt client, queues)",
         lambda: mqtt.Link(cfg["mqtt"], "bench1", 0)),
        ("charging core (Evse: state, limits, session)",
         lambda: evse.Evse(32, fallback_current_a=6, period_ms=20, selftest=True)),
        ("simulated board (SimBoard)", lambda: SimBoard()),
        ("session log handle (lazy.Sessions, nothing waiting)", lambda: lazy.Sessions(ROOT)),
        ("update job handle (OnDemandUpdater, no job)",
         lambda: ondemand.OnDemandUpdater(ROOT, "sim", (1, 0, 0, 0), None)),
    )
    for name, fn in parts:
        n, _ = _delta(fn)
        report("agent holds: %s" % name, n / 1024, "KB")
    lk = a.link
    report("agent holds: MQTT receive buffer (of the link)", (len(lk._ibuf) + len(lk._rbuf)) / 1024, "KB")
    for m in HELD:
        report("agent holds: module %s (%s)" % (m, "source" if m == "boot" else ".mpy"),
               mods[m] / 1024, "KB")
    report("agent holds: modules, sum", sum(mods.values()) / 1024, "KB")
    report("agent holds: objects and state after 300 periods", objs / 1024, "KB")
    report("agent idle, live heap (modules + objects; no vboard ROM)", total / 1024, "KB",
           "<= 64 (mp32)")
    for m in ON_DEMAND:
        report("loaded on demand, while loaded: %s (.mpy)" % m, demand[m] / 1024, "KB")
    held = sorted(k for k in sys.modules if k.startswith("firmware.") or k in ("boot", "umqtt.simple"))
    extra = [k for k in held if k not in HELD]
    report("agent idle: modules held beyond the list", " ".join(extra) or "none", "")


main()
