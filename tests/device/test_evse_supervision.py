# mptest: heapsize=96K
# Supervision and installer settings (issue 8): PP table B.2, the 51 A clamp,
# settings checks, overcurrent, temperature, session limits, the rating.
import mptest
from firmware.evse import Evse, pp_rating
from test_evse_rig import Rig, pwm


def test_pp_bands_table_b2():
    rows = ((59, 0), (60, 63), (80, 63), (100, 63), (140, 63), (141, 32), (163, 32), (164, 32),
            (220, 32), (308, 32), (309, 20), (330, 20), (399, 20), (400, 20), (680, 20), (936, 20),
            (937, 13), (1099, 13), (1100, 13), (1500, 13), (2460, 13),
            (4500, 13), (4501, 0), (None, None))
    for ohm, amps in rows:
        mptest.eq(pp_rating(ohm), amps, ohm)
        if ohm is None:
            continue
        r = Rig(80)
        r.pp = ohm
        r.ev("B")
        c = r.run(200)
        if amps:
            mptest.eq((c.available_a, c.source), (amps, "cable"), ohm)
        else:
            mptest.eq(c.fault, "pp_invalid", ohm)


def test_offer_between_51_and_52_5_is_51():
    for row in ((51.5, 51, 85.0), (52, 51, 85.0), (52.4, 51, 85.0), (52.5, 52.5, 85.0), (53, 53, 85.2)):
        lim, offer, duty = row
        r = Rig(80)
        r.e.set_limit("x", lim)
        r.ev("B")
        c = r.run(200)
        mptest.eq(c.current_a, offer, row)
        mptest.near(c.duty, duty, 1e-9, row)


def test_bad_settings_say_why():
    rows = (
        ({"debounce": 6}, "100 ms"),  # 6 x 20 ms = 120 ms to open
        ({"debounce": 3, "period_ms": 50}, "100 ms"),
        ({"duty_interval_ms": 0}, "duty_interval_ms"), ({"duty_interval_ms": 4999}, "duty_interval_ms"),
        ({"c1_timeout_ms": 0}, "c1_timeout_ms"), ({"c1_timeout_ms": 6001}, "c1_timeout_ms"),
        ({"relay_holdoff_ms": -1}, "relay_holdoff_ms"), ({"overcurrent_ms": 0}, "overcurrent_ms"),
        ({"temp_derate_c": 80, "temp_stop_c": 82}, "temp_stop_c"),
        ({"ticks_period": 1000}, "ticks_period"), ({"ticks_period": 3 << 28}, "ticks_period"),
        ({"rcd_retry_ms": 1 << 29}, "rcd_retry_ms"), ({"session_max_wh": 0}, "session_max_wh"),
        ({"period_ms": 0}, "period_ms"),
    )
    for kw, why in rows:
        try:
            Evse(32, **kw)
        except ValueError as ex:
            mptest.true(why in str(ex), "reason", str(ex), kw)
            continue
        raise AssertionError("accepted %r" % (kw,))
    Evse(32, debounce=5, period_ms=20)  # exactly 100 ms is allowed


def test_overcurrent_stops_after_7s():
    # (offer A, measured A, fault after 7 s): EVerest (offer + 0.5) x 1.1
    for row in ((16, 18.0, False), (16, 18.7, True), (32, 35.8, True), (32, 35.7, False)):
        offer, meas, trips = row
        r = Rig(32)
        r.e.set_limit("x", offer)
        r.charging()
        r.current = meas
        c = r.run(6900)
        mptest.eq((c.relay, c.fault), (True, None), "before 7 s", row)
        c = r.run(200)
        mptest.eq((c.fault == "overcurrent", c.relay), (trips, not trips), "row", row)
        if trips:
            mptest.eq(c.duty, 0.0, "a fault stop: F")
            r.current = 0.0
            c = r.run(10000)
            mptest.eq((c.fault, c.relay), ("overcurrent", False), "sticky while plugged")
            r.e.clear_faults(local=False)  # a remote clear may clear it
            mptest.eq(r.step().fault, None)


def test_temperature_derates_then_stops():
    r = Rig(32)
    r.temp = 40.0
    r.charging()
    r.run(6000)
    mptest.eq(r.c.current_a, 32)
    r.temp = 72.0
    c = r.run(5100)
    mptest.eq((c.current_a, c.source, c.relay), (16, "temperature", True))
    r.temp = 86.0
    c = r.run(100)
    mptest.eq((c.fault, c.relay, c.duty), ("over_temperature", False, 0.0))
    r.temp = 82.0  # within the 5 C hysteresis: still stopped
    mptest.eq(r.run(2000).fault, "over_temperature")
    r.temp = 79.0
    c = r.run(6000)
    mptest.eq((c.fault, c.current_a, c.source), (None, 16, "temperature"))
    r.temp = 64.0
    c = r.run(6000)
    mptest.eq((c.current_a, c.source), (32, "max"))


def test_session_energy_and_duration_limits():
    # (settings, how the session ends)
    for row in (({"session_max_wh": 1000}, "energy_limit"),
                ({"session_max_ms": 60000}, "duration_limit")):
        kw, reason = row
        r = Rig(32, **kw)
        r.energy = 5000.0
        r.charging()
        r.energy = 5999.0
        c = r.run(50000)
        mptest.eq((c.session_active, c.relay), (True, True), row)
        r.energy = 6000.0
        c = r.run(12000)
        mptest.eq((c.session_active, pwm(c)), (False, False), row)
        rec = r.e.pop_finished()
        mptest.eq(rec["reason"], reason, row)
        mptest.eq(r.run(10000).session_active, False, "no new session until unplug")
    r = Rig(32)
    r.energy = 0.0
    r.charging()
    r.e.set_session_limits(energy_wh=10)
    r.energy = 10.0
    mptest.eq(r.step().session_active, False)
    mptest.raises(ValueError, r.e.set_session_limits, energy_wh=-1)


def test_set_limit_never_raises_the_offer_above_the_rating():
    r = Rig(16)
    r.charging()
    for amps in (80, 32, 17, 16.5):
        r.e.set_limit("backend", amps)
        c = r.run(6000)
        mptest.eq((c.current_a, c.available_a), (16, 16), amps)
