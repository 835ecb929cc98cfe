# mptest: heapsize=96K
# Charging safety (issue 8): weld at power-up, state F after fault stops, the
# 5 s duty rule, contactor hold-off, wrap-safe time without allocation.
import gc
import micropython
import mptest
from firmware.evse import Evse, Sense
from test_evse_rig import Rig, pwm, MASK


def test_weld_at_power_up_is_latched_whatever_the_ev_does():
    # (EV state at boot, debounce): feedback closed before any close command
    for row in (("A", 2), ("B", 2), ("C", 2), ("C", 3), ("D", 2)):
        letter, deb = row
        r = Rig(debounce=deb, ventilation=True)
        r.weld = True
        r.ev(letter)
        for _ in range(deb):
            c = r.step()
        mptest.eq((c.fault, c.state, c.duty, c.relay), ("relay_welded", "F", 0.0, False), "row", row)
        c = r.run(60000)  # a 60 s session request on a welded contactor: never charges
        mptest.eq((c.fault, c.state, c.relay, c.session_active), ("relay_welded", "F", False, False),
                  "row", row)


def test_fault_stop_shows_f_for_300ms_then_x1():
    # (cause while charging, fault code, latched)
    rows = (("rcd", "rcd_trip", False), ("diode", "diode_missing", False),
            ("stuck", "relay_stuck_open", False), ("pp", "pp_invalid", False),
            ("cp", "cp_error", False), ("rcd1", "rcd_latched", True))
    for row in rows:
        how, code, latched = row
        r = Rig(rcd_max_trips=1 if how == "rcd1" else 3, rcd_retry_ms=60000)
        r.pp = 680
        r.charging()
        r.run(200)
        if how in ("rcd", "rcd1"):
            r.rcd = True
        elif how == "diode":
            r.diode = False
        elif how == "stuck":
            r.stuck = True
        elif how == "pp":
            r.pp = 20
        else:
            r.hi = 0
        r.until(lambda c: not pwm(c), 1500)
        t0 = r.t
        mptest.eq((r.c.duty, r.c.state, r.c.relay, r.c.fault), (0.0, "F", False, code), "row", row)
        while r.t - t0 < 300 - r.period:
            mptest.eq(r.step().duty, 0.0, "left F after", r.t - t0, "row", row)
        c = r.run(100)
        mptest.eq(c.duty, 0.0 if latched else 100.0, "after 300 ms", row)
        mptest.eq(c.relay, False)


def test_latched_f_still_sees_the_unplug():
    r = Rig(rcd_max_trips=1)
    r.charging()
    r.rcd = True
    r.step()
    r.rcd = False
    r.run(3000)
    mptest.eq((r.c.fault, r.c.state, r.c.ev_connected), ("rcd_latched", "F", True))
    mptest.eq(r.e.pop_finished()["reason"], "rcd_latched")
    r.ev("A")
    dt = r.until(lambda c: not c.ev_connected, 2000)
    mptest.true(dt is not None, "unplug not seen in latched F")
    # F kept (a +12 V look of `debounce` samples every second, relay open)
    f_ms = 0
    for _ in range(250):
        c = r.step()
        mptest.eq((c.state, c.fault, c.relay), ("F", "rcd_latched", False))
        f_ms += r.period if c.duty == 0.0 else 0
    mptest.true(f_ms >= 4000, "mostly F", f_ms)
    r.ev("B")  # a new vehicle: no session while latched
    c = r.run(3000)
    mptest.eq((c.ev_connected, c.session_active), (True, False))


def test_one_duty_change_per_5s_with_a_jittery_limit():
    # a ramping / jittery load manager: 10 requests in 5 s, at most 1 change
    r = Rig(32)
    r.ev("B")
    r.run(6000)
    changes = []
    last = r.c.duty
    for k in range(100):  # 50 s, a new limit every 500 ms
        r.e.set_limit("lm", (10, 30, 12, 28, 16)[k % 5])
        for _ in range(25):
            c = r.step()
            if c.duty != last:
                changes.append(r.t)
                last = c.duty
    for a, b in zip(changes, changes[1:]):
        mptest.true(b - a >= 5000, "two changes %d ms apart" % (b - a))
    mptest.true(len(changes) >= 8, "the offer follows at the 5 s pace", len(changes))


def test_limits_that_must_hold_stop_instead():
    # (limit, hard): below 6 A or hard=True stops the PWM in the same step
    for row in ((5, False), (10, True), (0, False)):
        amps, hard = row
        r = Rig(32)
        r.charging()
        r.run(6000)
        r.e.set_limit("safety", amps, hard=hard)
        c = r.step()
        mptest.eq((pwm(c), c.current_a), (False, 0), "row", row)
        c = r.run(6000)  # restarts at the limit after the spacing (if >= 6 A)
        mptest.eq(c.current_a, amps if amps >= 6 else 0, "row", row)


def test_chattering_ev_gets_few_closes():
    # (hold-off ms, max closes in a minute) for an EV toggling C/B every 200 ms
    for row in ((3000, 21), (5000, 13), (0, 160)):
        holdoff, most = row
        r = Rig(relay_holdoff_ms=holdoff)
        r.charging()
        n0 = r.e.relay_cycles
        last_open = None
        for k in range(300):  # 60 s
            r.ev("B" if k % 2 else "C")
            for _ in range(10):
                prev = r.c.relay
                c = r.step()
                if prev and not c.relay:
                    last_open = r.t
                if c.relay and not prev and last_open is not None:
                    mptest.true(r.t - last_open >= holdoff, "re-closed after", r.t - last_open)
        n = r.e.relay_cycles - n0
        mptest.true(n <= most, "closes per minute", n, "row", row)
        mptest.true(n >= 1 if holdoff < 6000 else True, "never re-closed", row)


class _Clock:
    # a ticks_ms() clock of period 2**30 that never leaves the small ints
    def __init__(self, t):
        self.t = t

    def add(self, ms):
        t = self.t
        if t > MASK - ms:
            self.t = t - MASK + ms - 1
        else:
            self.t = t + ms
        return self.t


def test_30_days_with_wraps_allocate_nothing():
    if not hasattr(micropython, "mem_current"):
        mptest.skip("no micropython.mem_current on this port")
    # 30 days of virtual uptime: every hour 25 control periods of 20 ms, the
    # ticks clock wrapping at 2**30 ms (12.4 days) twice. Charging and in A.
    for letter in ("C", "A"):
        e = Evse(32, selftest=False)
        e.set_limit("backend", 16)
        s = Sense(cp_high_mv=12000, energy_wh=1.5, current_a=16.0, temperature_c=30.0)
        clk = _Clock(MASK - 40000)
        for k in range(300):  # plug in (B), then ask for charge (C)
            s.cp_high_mv = 12000 if letter == "A" else (9000 if k < 20 else 6000)
            c = e.step(clk.add(20), s)
            s.cp_low_mv = -12000 if pwm(c) else None
            s.relay_closed = c.relay
        mptest.eq(c.relay, letter == "C", letter)
        step = e.step
        wraps = 0
        gc.collect()
        gc.disable()
        try:
            m0 = micropython.mem_current()
            for _ in range(30 * 24):
                t0 = clk.t
                step(clk.add(3600000), s)
                if clk.t < t0:
                    wraps += 1
                for _ in range(25):
                    c = step(clk.add(20), s)
                    s.relay_closed = c.relay
            used = micropython.mem_current() - m0
        finally:
            gc.enable()
        mptest.eq(used, 0, "bytes over 30 days", letter)
        mptest.true(wraps >= 2, "wraps", wraps)
        mptest.eq((c.relay, c.fault), (letter == "C", None), letter)
        if letter == "C":
            # the duration counter saturates at half the ticks period (6.2 days)
            mptest.true(e.session["duration_ms"] >= 1 << 29, e.session["duration_ms"])


def test_timers_across_a_wrap():
    # RCD retry, TTL and hold-off timers keep their length across the wrap
    r = Rig(rcd_retry_ms=10000, t0=MASK - 5000)
    r.charging()
    r.e.set_limit("b", 10, ttl_ms=20000)
    r.rcd = True
    r.step()
    r.rcd = False
    t_clear = r.t
    dt = r.until(lambda c: c.relay, 30000)
    mptest.true(dt is not None and r.t - t_clear >= 10000, "retry across the wrap", dt)
    mptest.eq(r.c.source, "b")
    r.until(lambda c: c.source == "fallback", 30000)
    mptest.true(r.t - t_clear >= 19000, "ttl across the wrap")
