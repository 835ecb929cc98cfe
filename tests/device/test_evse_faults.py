# Faults: RCD trips, retry and latch; which faults latch, which clear by
# themselves or on unplug; priority of the reported code; clear_faults().
import mptest
from test_evse_rig import Rig, pwm


def _trip(r, ms=200):
    # a trip while the PWM runs (or the contactor is closed) is a fault stop:
    # F (0.0) at once; a latched trip keeps F
    was_on = r.c is not None and (pwm(r.c) or r.c.relay)
    r.rcd = True
    c = r.step()
    stop = was_on or c.fault == "rcd_latched"
    mptest.eq((c.relay, c.duty), (False, 0.0 if stop else 100.0), c.fault, was_on)
    r.run(ms)
    r.rcd = False
    r.step()
    return c


def test_rcd_trip_retry_then_latch():
    r = Rig(rcd_retry_ms=10000, rcd_max_trips=3)
    r.charging()
    # (trip number, fault reported at the trip, re-closes after the retry)
    rows = ((1, "rcd_trip", True), (2, "rcd_trip", True), (3, "rcd_latched", False))
    for row in rows:
        n, fault, recloses = row
        c = _trip(r)
        mptest.eq(c.fault, fault, "row", row)
        t_clear = r.t - r.period  # the last sample with the RCD input set
        c = r.run(9700)  # the retry delay counts from the RCD input clearing
        mptest.eq((c.relay, c.fault), (False, fault), "during retry", row)
        if fault == "rcd_trip":
            r.until(lambda c: c.fault != "rcd_trip", 1000)
            mptest.true(r.t - t_clear >= 10000, "retry too early", r.t - t_clear, row)
        dt = r.until(lambda c: c.relay, 6000)
        mptest.eq(dt is not None, recloses, "row", row, r.c.fault)
    c = r.c
    mptest.eq((c.fault, c.state, c.duty, c.session_active), ("rcd_latched", "F", 0.0, False))
    mptest.eq(r.e.pop_finished()["reason"], "rcd_latched")
    c = r.run(3600 * 1000)
    mptest.eq(c.fault, "rcd_latched", "latched for an hour")
    r.e.clear_faults()
    r.run(200)
    mptest.eq((r.c.fault, r.c.state, r.c.session_active), (None, "C", True))
    mptest.true(r.until(lambda c: c.relay, 6000) is not None, "no charge after clear_faults")


def test_rcd_held_tripped_keeps_the_fault():
    r = Rig(rcd_retry_ms=1000, rcd_max_trips=3)
    r.charging()
    r.rcd = True
    c = r.run(60000)  # one long trip is one trip
    mptest.eq((c.fault, c.relay), ("rcd_trip", False))
    r.rcd = False
    r.run(900)
    mptest.eq(r.c.fault, "rcd_trip")
    r.run(200)
    mptest.eq(r.c.fault, None)


def test_rcd_trip_count_resets_on_unplug():
    r = Rig(rcd_retry_ms=100, rcd_max_trips=2)
    r.ev("B")
    r.run(200)
    _trip(r)
    r.ev("A")
    r.run(200)
    r.ev("B")
    r.run(200)
    c = _trip(r)
    mptest.eq(c.fault, "rcd_trip", "the count should restart for a new plug-in")
    c = _trip(r)
    mptest.eq(c.fault, "rcd_latched")


def test_rcd_max_trips_1_latches_at_once():
    r = Rig(rcd_max_trips=1)
    r.charging()
    c = _trip(r)
    mptest.eq((c.fault, c.relay, c.duty), ("rcd_latched", False, 0.0))


def test_clear_faults_with_rcd_still_tripped():
    r = Rig(rcd_max_trips=1, rcd_retry_ms=1000)
    r.rcd = True
    r.run(100)
    mptest.eq(r.c.fault, "rcd_latched")
    r.e.clear_faults()
    c = r.step()  # still tripped: counts as a new trip
    mptest.eq((c.fault, c.relay), ("rcd_latched", False))


def test_fault_catalogue():
    # (fault, how, pilot duty, state, cleared by unplug, cleared by clear_faults)
    # "how" provokes it while charging; latched faults drive F (0.0)
    rows = (
        ("relay_welded", "weld", 0.0, "F", False, True),
        ("rcd_latched", "rcd_latch", 0.0, "F", False, True),
        ("rcd_trip", "rcd", 100.0, "C", True, True),
        ("cp_error", "cp_e", 100.0, "E", True, False),
        ("diode_missing", "diode", 100.0, "C", True, True),
        ("relay_stuck_open", "stuck", 100.0, "C", True, True),
        ("pp_invalid", "pp", 100.0, "C", True, False),
        ("ventilation_required", "vent", 100.0, "D", True, False),
    )
    for row in rows:
        fault, how, duty, state, by_unplug, by_clear = row
        for reset in ("unplug", "clear"):
            r = Rig(rcd_max_trips=(1 if how == "rcd_latch" else 3), rcd_retry_ms=1000)
            r.pp = 680
            r.charging()
            if how == "weld":
                r.weld = True
                r.ev("B")
                r.run(1200)
                r.ev("C")
            elif how in ("rcd", "rcd_latch"):
                r.rcd = True
            elif how == "cp_e":
                r.ev("E")
            elif how == "diode":
                r.diode = False
            elif how == "stuck":
                r.stuck = True
            elif how == "pp":
                r.pp = 20
            else:
                r.ev("D")
            c = r.run(1500)  # detected, then 300 ms of F after the fault stop
            mptest.eq((c.fault, c.duty, c.state, c.relay), (fault, duty, state, False), "row", row)
            # the cause goes away, the condition is otherwise back to normal (in C)
            r.weld = r.rcd = r.stuck = False
            r.diode = True
            r.pp = 680
            if reset == "unplug":
                r.ev("A")
                r.run(2000)
                cleared = by_unplug
            else:
                r.e.clear_faults()
                r.step()
                cleared = by_clear
            mptest.eq(r.c.fault is None, cleared, "row", row, reset, r.c.fault)


def test_self_clearing_faults_clear_without_help():
    # cp_error, pp_invalid, ventilation_required end with their cause
    for how in ("cp_e", "pp", "vent"):
        r = Rig()
        r.pp = 680
        r.charging()
        if how == "cp_e":
            r.ev("E")
        elif how == "pp":
            r.pp = 4600
        else:
            r.ev("D")
        mptest.true(r.run(500).fault is not None, how)
        r.pp = 680
        r.ev("C")
        mptest.eq(r.run(100).fault, None, how)
        mptest.true(r.until(lambda c: c.relay, 6000) is not None, "no re-close", how)


def test_reported_fault_priority_and_active_faults():
    r = Rig(rcd_retry_ms=100000)
    r.charging()
    r.rcd = True
    r.ev("D")
    r.step()
    r.step()
    mptest.eq(r.c.fault, "rcd_trip")
    r.run(400)  # after the 300 ms of F the CP is read again
    mptest.eq(r.c.fault, "rcd_trip")
    mptest.eq(sorted(r.e.active_faults()), ["rcd_trip", "ventilation_required"])
    r.rcd = False
    r.weld = True
    r.run(1500)
    mptest.eq(r.c.fault, "relay_welded")
    mptest.true("relay_welded" in r.e.active_faults())


def test_no_close_while_any_fault_in_c():
    # pwm never restarts while a fault is active
    r = Rig(rcd_retry_ms=20000)
    r.charging()
    r.rcd = True
    r.step()
    r.rcd = False
    for _ in range(900):
        c = r.step()
        mptest.true(not c.relay and not pwm(c), "charging during rcd retry", c.duty)
