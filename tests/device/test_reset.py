# mptest: heapsize=128K timeout=300
# Heap: the whole agent (charging core, commands, sim HAL, LittleFS), as test_agent.py.
# A remote reset under load (issue 13.5): refused while a session runs unless
# forced; a forced reset stops PWM first, opens the contactor only after the
# EV left C (or the C1 timeout), writes the session record, then resets.
import mptest
import flashrig
from firmware.agent import Agent
from firmware.hal.sim import SimBoard, SimReset
from firmware.sessionlog import SessionLog

P = 20
R = None
_MNT = "/t_reset"
_TMP = None


def setup():
    global R, _TMP
    R, _TMP = flashrig.flash_up(_MNT, "evreset")


def teardown():
    flashrig.flash_down(_MNT, _TMP)


def _charging():
    log = SessionLog(R)
    b = SimBoard(relay_delay_ms=30)
    cfg = {"device_id": "t1", "board": "sim", "max_current_a": 32, "fallback_current_a": 6,
           "ventilation": False, "require_auth": False, "telemetry_ms": 10000}
    a = Agent(b, cfg, R, {"slot": "a", "version": "1.0.0"}, link=None, updater=None,
              sessions=log, health=None)
    b.wdt_start(a.wdt_ms)
    b.plug("B", max_current_a=32)
    b.ev_state("C")
    for _ in range(3000 // P):
        b.advance(P)
        a.tick(b.ticks_ms())
    mptest.true(b.contacts_closed and a.evse.session is not None, "charging")
    return a, b, log


def _until_reset(a, b, ev_leaves_c_ms=None, max_ms=15000):
    # ticks until SimReset; returns [(t, duty, relay_commanded)] of every tick
    # where the outputs changed, and of the tick that reset, and its time (only
    # the changes: a tuple per tick is ~18 KB of heap on mp64 by the C1 timeout)
    seen = []
    t = 0
    try:
        while t < max_ms:
            if ev_leaves_c_ms is not None and t == ev_leaves_c_ms:
                b.ev_state("B")
            b.advance(P)
            t += P
            a.tick(b.ticks_ms())
            if not seen or seen[-1][1] != b.duty or seen[-1][2] != b.relay_commanded:
                seen.append((t, b.duty, b.relay_commanded))
    except SimReset:
        seen.append((t, b.duty, b.relay_commanded))   # the tick that reset
        return seen, t
    raise AssertionError("no reset within %d ms" % max_ms)


def test_reset_refused_while_a_session_runs():
    a, b, log = _charging()
    rep = a.command("reset", {"id": "r1", "type": "hard"})
    mptest.eq(rep["ok"], False)
    mptest.true("session" in rep["error"] and "force" in rep["error"], rep)
    for _ in range(3000 // P):
        b.advance(P)
        a.tick(b.ticks_ms())
    mptest.eq((b.resets, b.contacts_closed, a.evse.session is not None), (0, True, True))
    rep = a.command("reset", {"id": "r2", "type": "hard", "force": "yes"})
    mptest.eq(rep["ok"], False)


def _check_order(seen):
    # PWM off (steady +12 V, duty 100) before the contactor opens, never the reverse
    open_at = [x[0] for x in seen if not x[2]]
    mptest.true(open_at, "the contactor opened before the reset", seen[-3:])
    pwm_off = [x[0] for x in seen if x[1] == 100.0]
    mptest.true(pwm_off and pwm_off[0] <= open_at[0], "PWM stopped first", pwm_off[:1], open_at[:1])
    mptest.true(not seen[-1][2], "contactor open at the reset")
    return open_at[0]


def test_forced_reset_stops_pwm_waits_for_the_ev_then_resets():
    a, b, log = _charging()
    rep = a.command("reset", {"id": "r3", "type": "hard", "force": True})
    mptest.eq(rep["ok"], True)
    seen, t = _until_reset(a, b, ev_leaves_c_ms=2000)
    opened = _check_order(seen)
    mptest.true(opened > 2000, "contactor held until the EV left C", opened)
    mptest.eq(b.resets, 1)
    mptest.eq(len(log), 1, "session record written before the reset")


def test_forced_reset_opens_at_the_c1_timeout_when_the_ev_stays_in_c():
    a, b, log = _charging()
    a.command("reset", {"id": "r4", "type": "hard", "force": True})
    seen, t = _until_reset(a, b)
    opened = _check_order(seen)
    mptest.true(5000 <= opened <= 9000, "C1 timeout", opened)
    mptest.eq(len(log), 1)
