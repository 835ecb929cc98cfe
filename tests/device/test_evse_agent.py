# mptest: heapsize=128K timeout=300
# Heap: the whole agent with the sim HAL and a LittleFS, as test_agent.py.
# The charging core's supervision wired through the agent on a SimBoard in
# virtual time: the power-on self-test drives the RCD test winding (and is a
# health check of a trial boot), the meter current feeds the overcurrent
# rule, the board temperature feeds the derating.
import mptest
import flashrig
import boot
from firmware.agent import Agent
from firmware.hal.sim import SimBoard, SimReset

P = 20
R = None
_MNT = "/t_evagent"
_TMP = None


def setup():
    global R, _TMP
    R, _TMP = flashrig.flash_up(_MNT, "evseagent")


def teardown():
    flashrig.flash_down(_MNT, _TMP)


def _agent(board=None, bootinfo=None, **cfg):
    b = board or SimBoard(relay_delay_ms=30)
    c = {"device_id": "t1", "board": "sim", "max_current_a": 32,
         "health": {"trial_s": 5, "need_mqtt": False}}
    c.update(cfg)
    a = Agent(b, c, R, bootinfo or {"slot": "a", "version": "1.0.0"},
              link=None, updater=None, sessions=None, health=-1 if bootinfo else None)
    return a, b


def _run(a, b, ms):
    for _ in range(ms // P):
        b.advance(P)
        a.tick(b.ticks_ms())


def test_self_test_drives_the_rcd_test_winding_then_charges():
    a, b = _agent()
    b.plug("C")   # the EV asks for power at once: it waits for the self-test
    seen_test = False
    for _ in range(40):
        _run(a, b, P)
        seen_test = seen_test or b.rcd_test_on
        mptest.eq(b.relay_commanded and a.evse.selftest is None, False, "closed during the self-test")
    mptest.true(seen_test, "the RCD test winding was never driven")
    mptest.eq((a.evse.selftest, b.rcd_test_on, b.rcd_tripped), ("ok", False, False))
    _run(a, b, 6000)
    mptest.eq((b.contacts_closed, a.cmd.fault), (True, None), "charging after the self-test")


class _NoWinding(SimBoard):
    # a board without an RCD test pin (the machine backends raise OSError)
    def rcd_test(self, on):
        raise OSError("no rcd_test pin fitted")


def test_failed_self_test_leaves_f_with_the_reason():
    # (board fault, reason)
    for how, why in (("rcd_dead", "rcd_no_trip"), ("weld", "relay_welded"), ("short", "cp_negative"),
                     ("no_pin", "rcd_no_trip")):
        b = _NoWinding(relay_delay_ms=30) if how == "no_pin" else SimBoard(relay_delay_ms=30)
        if how == "rcd_dead":
            b.rcd_test_works = False
        elif how == "weld":
            b.contacts_closed = b.welded = True   # welded since before the reboot
        elif how == "short":
            b.plug("C")
            b.short_cp()
        a, b = _agent(b)
        if how != "short":
            b.plug("C")
        _run(a, b, 3000)
        mptest.eq(a.evse.selftest, why, how)
        mptest.eq((a.cmd.state, b.relay_commanded, a.cmd.session_active), ("F", False, False), how)


def test_trial_boot_rolled_back_on_failed_core_self_test():
    boot.write_record(boot.Record("a"), R)
    boot.set_pending("b", 5, 3, "1.1.0", R)
    rec = boot.read_record(R)
    rec.trials -= 1
    boot.write_record(rec, R)
    b = SimBoard(relay_delay_ms=30)
    b.rcd_test_works = False
    a, b = _agent(b, bootinfo={"slot": "b", "trial": True, "version": "1.1.0"})
    mptest.true("selftest" in a.health.checks, "self-test not a health check")
    mptest.raises(SimReset, _run, a, b, 3000)
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending), ("a", None))
    mptest.eq(rec.reason, "selftest_failed: rcd_no_trip")


def test_meter_overcurrent_stops_charging():
    a, b = _agent()
    b.ev_overdraw_a = 6.0   # 32 A offered, 38 A drawn: over (32 + 0.5) * 1.1
    b.plug("C", max_current_a=32)
    _run(a, b, 6000)
    mptest.eq((b.contacts_closed, a.cmd.fault), (True, None), "within the 7 s")
    _run(a, b, 1500)
    mptest.eq((a.cmd.fault, b.relay_commanded), ("overcurrent", False))


def test_board_temperature_derates_the_offer():
    a, b = _agent()
    b.plug("C", max_current_a=32)
    _run(a, b, 6000)
    mptest.eq(a.cmd.current_a, 32)
    b.set_temperature(75.0)
    _run(a, b, 5200)
    mptest.eq((a.cmd.current_a, a.cmd.source), (16, "temperature"))
    b.set_temperature(90.0)
    _run(a, b, 200)
    mptest.eq((a.cmd.fault, b.relay_commanded), ("over_temperature", False))
