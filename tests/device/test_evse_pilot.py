# Control pilot: CP level bands, debounce, vehicle diode, the PWM duty formula.
import mptest
from firmware.evse import Evse, Sense, duty_for_current, current_for_duty
from test_evse_rig import Rig, pwm

NAN = float("nan")
INF = float("inf")


def test_cp_level_bands():
    # (cp_high_mv, state, fault, relay) after the debounce (the vehicle has its diode)
    rows = (
        (12000, "A", None, False), (13500, "A", None, False), (10500, "A", None, False),
        (13501, "E", "cp_error", False), (20000, "E", "cp_error", False),
        (10499, "B", None, False), (9000, "B", None, False), (7500, "B", None, False),
        (7499, "C", None, True), (6000, "C", None, True), (4500, "C", None, True),
        (4499, "D", "ventilation_required", False), (3000, "D", "ventilation_required", False),
        (1500, "D", "ventilation_required", False),
        (1499, "E", "cp_error", False), (0, "E", "cp_error", False),
        (-1500, "E", "cp_error", False), (-1501, "E", "cp_error", False),
        (-12000, "E", "cp_error", False), (None, "E", "cp_error", False),
    )
    for row in rows:
        mv, state, fault, relay = row
        r = Rig()
        r.hi = mv
        c = r.run(100)
        mptest.eq((c.state, c.fault, c.relay), (state, fault, relay), "row", row)


def test_first_sample_is_not_trusted():
    # until the debounce completes the state is unknown: reported A, no session
    for mv in (9000, 6000, 0):
        r = Rig()
        r.hi = mv
        c = r.step()
        mptest.eq((c.state, c.session_active, c.fault, c.duty), ("A", False, None, 100.0), mv)
        c = r.step()
        mptest.true(c.state != "A", "debounced", mv, c.state)


def test_single_noisy_sample_never_moves_the_contactor():
    # one sample at each level (or missing) while charging in C: nothing changes
    for mv in (12000, 9000, 3000, 0, 15000, -12000, -5000, None):
        r = Rig()
        r.charging()
        r.run(200)
        r.hi = mv
        c = r.step()
        mptest.eq((c.state, c.relay, c.fault), ("C", True, None), "noise", mv)
        r.ev("C")
        c = r.run(100)
        mptest.eq((c.state, c.relay, c.fault), ("C", True, None), "after noise", mv)
    # one C sample while in B with PWM does not close
    r = Rig()
    r.ev("B")
    r.run(200)
    r.ev("C")
    mptest.eq(r.step().relay, False, "single C sample closed the relay")
    r.ev("B")
    mptest.eq(r.run(200).relay, False)


def test_debounce_setting():
    # (debounce, samples of B that must not open, sample count that opens)
    for row in ((1, 0, 1), (2, 1, 2), (3, 2, 3), (5, 4, 5)):
        deb, keep, opens = row
        r = Rig(debounce=deb)
        r.charging()
        r.ev("B")
        for i in range(keep):
            mptest.eq(r.step().relay, True, "row", row, "sample", i + 1)
        for i in range(opens - keep):
            r.step()
        mptest.eq((r.c.relay, r.c.state), (False, "B"), "row", row)


def test_cp_error_is_not_latched():
    r = Rig()
    r.charging()
    for k, mv in enumerate((0, 15000, -4000)):
        r.hi = mv
        c = r.run(100)
        # the first one stops a running PWM: F (0.0) for 300 ms, then +12 V
        mptest.eq((c.fault, c.relay, c.duty), ("cp_error", False, 0.0 if k == 0 else 100.0), mv)
        c = r.run(300)
        mptest.eq((c.fault, c.relay, c.duty), ("cp_error", False, 100.0), mv)
        r.ev("B")
        c = r.run(100)
        mptest.eq((c.state, c.fault), ("B", None), "after", mv)
    c = r.run(5000)  # the PWM comes back once 5 s passed since it stopped
    mptest.true(pwm(c), "no PWM after cp_error cleared", c.duty)


def test_pwm_only_in_b_and_c_with_a_session():
    # (vehicle state, ventilation, PWM on)
    rows = (("A", False, False), ("B", False, True), ("C", False, True), ("D", False, False),
            ("D", True, True), ("E", False, False))
    for row in rows:
        letter, vent, on = row
        r = Rig(ventilation=vent)
        r.ev(letter)
        c = r.run(200)
        mptest.eq(pwm(c), on, "row", row, c.duty)


def test_missing_diode_is_a_fault():
    # (vehicle state, when the diode fails)
    for row in (("B", "before"), ("C", "before"), ("C", "charging")):
        letter, when = row
        r = Rig()
        if when == "charging":
            r.charging()
            r.diode = False
            r.step()
            c = r.step()  # two bad low samples (debounce 2)
        else:
            r.diode = False
            r.ev(letter)
            c = r.run(300)
        # a fault stop of the PWM: F (0.0) first, +12 V after 300 ms
        mptest.eq((c.fault, c.relay, c.duty, c.current_a), ("diode_missing", False, 0.0, 0), "row", row)
        c = r.run(320)
        mptest.eq((c.fault, c.relay, c.duty, c.current_a), ("diode_missing", False, 100.0, 0), "row", row)
        # sticky while plugged, even when the reading would be good again
        r.diode = True
        r.ev("C")
        c = r.run(10000)
        mptest.eq((c.fault, c.relay), ("diode_missing", False), "sticky", row)
        r.ev("A")
        c = r.run(100)
        mptest.eq(c.fault, None, "cleared by unplug", row)
    r = Rig()
    r.diode = False
    r.ev("B")
    r.run(300)
    r.e.clear_faults()
    mptest.eq(r.step().fault, None, "clear_faults")


def test_single_bad_low_sample_is_ignored():
    r = Rig()
    r.charging()
    r.diode = False
    c = r.step()
    mptest.eq((c.relay, c.fault), (True, None))
    r.diode = True
    mptest.eq(r.run(1000).relay, True)


def test_relay_waits_for_a_verified_diode():
    # no low-level reading while the PWM runs: the diode is never verified, no close
    e = Evse(32, selftest=False)
    s = Sense(cp_high_mv=6000)
    for i in range(300):
        c = e.step(1000 + 20 * i, s)
        mptest.eq((c.state, c.relay), ("C" if i else "A", False), "step", i, c.duty)
    mptest.true(pwm(c), "PWM should run", c.duty)
    s.cp_low_mv = -12000  # the first good low reading verifies it
    mptest.eq(e.step(7000, s).relay, True)


def test_duty_for_current():
    rows = ((0, 100.0), (5.9, 100.0), (6, 10.0), (10, 16.667), (13, 21.667), (16, 26.667),
            (20, 33.333), (32, 53.333), (40, 66.667), (51, 85.0), (51.5, 85.0), (52, 85.0), (52.4, 85.0), (52.5, 85.0),
            (63, 89.2), (70, 92.0), (80, 96.0))
    for row in rows:
        amps, duty = row
        mptest.near(duty_for_current(amps), duty, 0.001, "row", row)


def test_current_for_duty():
    rows = ((0, 0.0), (3, 0.0), (5, 0.0), (7.9, 0.0), (8, 6.0), (9.9, 6.0), (10, 6.0),
            (16.667, 10.0), (50, 30.0), (53.333, 32.0), (85, 51.0), (85.2, 53.0), (89.2, 63.0),
            (96, 80.0), (96.5, 80.0), (97, 80.0), (97.1, 0.0), (100, 0.0))
    for row in rows:
        duty, amps = row
        mptest.near(current_for_duty(duty), amps, 0.001, "row", row)


def test_duty_current_round_trip():
    for a in list(range(6, 52)) + list(range(53, 81)):
        mptest.near(current_for_duty(duty_for_current(a)), a, 0.001, "amps", a)
    # 51 < A < 52.5 A: the upper formula would give a duty below 85 % that
    # reads back on the lower formula as less (52 A -> 84.8 % -> 50.88 A):
    # clamped to 51 A (85 %), what the vehicle reads (as EVerest does)
    for a in (51.01, 51.5, 52, 52.49):
        mptest.near(current_for_duty(duty_for_current(a)), 51.0, 0.001, "amps", a)


def test_duty_functions_reject_bad_input():
    for bad in (-1, -0.1, 80.1, 81, "10", None, True, NAN, INF):
        mptest.raises(ValueError, duty_for_current, bad)
    for bad in (-0.1, 100.1, "50", None, False, NAN, -INF):
        mptest.raises(ValueError, current_for_duty, bad)


def test_step_returns_the_same_command_object():
    e = Evse(16, selftest=False)
    s = Sense(cp_high_mv=12000)
    c1 = e.step(1000, s)
    s.cp_high_mv = 9000
    c2 = e.step(1020, s)
    mptest.true(c1 is c2, "a new Command per step")
    for name in ("state", "duty", "relay", "fault", "current_a", "available_a", "source",
                 "session_active"):
        mptest.true(hasattr(c2, name), "missing field", name)


def test_sense_keywords_and_defaults():
    s = Sense(cp_high_mv=9000)
    mptest.eq((s.cp_high_mv, s.cp_low_mv, s.pp_ohm, s.rcd_fault, s.relay_closed, s.energy_wh),
              (9000, None, None, False, False, None))
    s = Sense(cp_high_mv=6000, cp_low_mv=-12000, pp_ohm=220, rcd_fault=True, relay_closed=True,
              energy_wh=1.5)
    s.cp_high_mv = 3000
    mptest.eq((s.cp_high_mv, s.cp_low_mv, s.pp_ohm, s.rcd_fault, s.relay_closed, s.energy_wh),
              (3000, -12000, 220, True, True, 1.5))
