# mptest: heapsize=128K timeout=120
# Heap: the agent (charging core, commands, sim HAL, LittleFS) with firmware/config.py
# and ota/health.py imported for a moment each, on the 64-bit unix port.
# The modules the agent needs only at start (the protected config store, the
# boot report of the last update) or for one command (get_config/set_config)
# are not kept loaded: their heap goes back to the running agent.
import sys
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
    for name, p in (("get_config", {"id": 1}),
                    ("set_config", {"id": 2, "changes": {"telemetry_ms": 5000}})):
        rep = a.command(name, p)
        mptest.eq(rep["id"], p["id"])
        mptest.true("firmware.config" not in sys.modules, "config store dropped after", name)
    mptest.eq(rep["ok"], False, "no valid configuration on this flash: set_config refused", rep)
