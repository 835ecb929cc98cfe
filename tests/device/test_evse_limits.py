# Available current: max, PP cable rating, set_limit() with TTL and fallback,
# the 5 s duty spacing, and input validation.
import mptest
from firmware.evse import Evse, Sense, duty_for_current
from test_evse_rig import Rig, pwm

NAN = float("nan")
INF = float("inf")


def _offer(r):
    c = r.c
    return (c.current_a, c.source, c.duty)


def test_available_current_table():
    # (max_current_a, pp_ohm, limits, offered A, binding source); 0 = no PWM
    rows = (
        (32, None, (), 32, "max"),
        (80, None, (), 80, "max"),
        (32, 1500, (), 13, "cable"),
        (32, 680, (), 20, "cable"),
        (32, 220, (), 32, "max"),  # tie: max wins
        (80, 220, (), 32, "cable"),
        (80, 100, (), 63, "cable"),
        # IEC 61851-1 table B.2 bands; between two bands the lower rating
        (80, 60, (), 63, "cable"), (80, 80, (), 63, "cable"), (80, 140, (), 63, "cable"),
        (80, 141, (), 32, "cable"), (80, 149, (), 32, "cable"), (80, 164, (), 32, "cable"),
        (80, 308, (), 32, "cable"), (80, 309, (), 20, "cable"), (80, 330, (), 20, "cable"),
        (80, 399, (), 20, "cable"), (80, 400, (), 20, "cable"), (80, 936, (), 20, "cable"),
        (80, 937, (), 13, "cable"), (80, 1100, (), 13, "cable"), (80, 2460, (), 13, "cable"),
        (80, 4500, (), 13, "cable"),
        (16, 220, (("lb", 10),), 10, "lb"),
        (32, None, (("a", 20), ("b", 12)), 12, "b"),
        (32, 680, (("a", 25), ("b", 30)), 20, "cable"),
        (32, None, (("a", 10.5),), 10.5, "a"),
        (32, None, (("a", 5.9),), 0, "a"),
        (32, None, (("a", 0),), 0, "a"),
        (5, None, (), 0, "max"),
        (6, None, (), 6, "max"),
    )
    for row in rows:
        mx, pp, lims, amps, src = row
        r = Rig(mx)
        r.pp = pp
        for name, a in lims:
            r.e.set_limit(name, a)
        r.ev("B")
        c = r.run(200)
        want_duty = duty_for_current(amps) if amps else 100.0
        mptest.eq((c.current_a, c.source, c.fault), (amps, src, None), "row", row)
        mptest.near(c.duty, want_duty, 1e-9, "row", row)
        if amps:
            mptest.eq(c.available_a, amps, "row", row)
        else:
            mptest.true(c.available_a < 6, "available", c.available_a, "row", row)


def test_pp_out_of_range_is_a_fault():
    # (pp_ohm) out of range: fault pp_invalid, no PWM, no charge, while connected
    for pp in (0, 59, 4501, 100000, INF):
        r = Rig()
        r.pp = pp
        c = r.run(200)
        mptest.eq((c.state, c.fault), ("A", None), "ignored while unplugged", pp)
        r.ev("C")
        c = r.run(3000)
        mptest.eq((c.fault, c.relay, c.duty, c.current_a), ("pp_invalid", False, 100.0, 0), pp)
        r.pp = 680  # a good reading again: not latched
        r.ev("B")
        c = r.run(5100)
        mptest.eq((c.fault, c.current_a, c.source), (None, 20, "cable"), pp)


def test_single_noisy_pp_sample_is_ignored():
    r = Rig()
    r.pp = 220
    r.charging()
    r.pp = 10
    mptest.eq((r.step().relay, r.c.fault), (True, None))
    r.pp = 220
    mptest.eq((r.run(1000).relay, r.c.fault), (True, None))


def test_ttl_expiry_falls_back():
    # (limit A, ttl ms, fallback A, offer before expiry, offer after expiry, source after)
    rows = (
        (10, 30000, 6, 10, 6, "fallback"),
        (20, 30000, 16, 20, 16, "fallback"),
        (4, 30000, 6, 0, 6, "fallback"),  # 0 A before: the fallback starts the PWM
        (20, 30000, 0, 20, 0, "fallback"),
        (10, 30000, 40, 10, 32, "max"),  # fallback above max: max binds
    )
    for row in rows:
        lim, ttl, fb, before, after, src = row
        r = Rig(32, fallback_current_a=fb)
        r.ev("B")
        r.run(200)
        r.e.set_limit("backend", lim, ttl_ms=ttl)
        r.run(ttl - 200)
        mptest.eq(r.c.current_a, before, "before expiry", row)
        r.run(5300)  # expiry, then up to 5 s spacing for an increase
        mptest.eq((r.c.current_a, r.c.source), (after, src), "after expiry", row)
        # a fresh setpoint replaces the fallback
        r.e.set_limit("backend", 8, ttl_ms=ttl)
        r.run(5100)
        mptest.eq((r.c.current_a, r.c.source), (8, "backend"), "fresh setpoint", row)


def test_ttl_is_relative_to_the_last_step():
    e = Evse(32, selftest=False)
    s = Sense(cp_high_mv=9000, cp_low_mv=-12000)
    t = 7 * 10**12
    for i in range(3):
        e.step(t + 20 * i, s)
    t += 40
    e.set_limit("backend", 10, ttl_ms=1000)  # expires at t + 1000
    c = e.step(t + 999, s)
    mptest.eq((c.available_a, c.source), (10, "backend"))
    c = e.step(t + 1000, s)
    mptest.eq((c.available_a, c.source), (6, "fallback"))
    e.set_limit("backend", None)
    c = e.step(t + 1020, s)
    mptest.eq((c.available_a, c.source), (32, "max"), "None clears")


def test_duty_spacing():
    # (ms after the PWM start, action, offered A after that step)
    # while the PWM runs at most one change per 5 s, reductions included
    # (EVerest IEC_PWM_MAX_UPDATE_INTERVAL); stops are immediate, and a limit
    # that must hold at once (below 6 A, hard=True) stops instead of waiting
    rows = (
        (1000, ("lim", 16), 32),  # reduction: waits until 5000
        (4980, None, 32),
        (5000, None, 16),
        (5500, ("lim", 20), 16),  # increase: waits until 10000
        (9980, None, 16),
        (10000, None, 20),
        (10500, ("lim", 4), 0),  # below 6 A: stop now
        (11000, ("lim", 12), 0),  # restart waits until 15500
        (15480, None, 0),
        (15500, None, 12),
        (15520, ("lim", None), 12),  # back to max: waits until 20500
        (20480, None, 12),
        (20500, None, 32),
        (21000, ("hard", 10), 0),  # a hard limit below the offer: stop now
        (25980, None, 0),
        (26000, None, 10),  # restart at the hard limit 5 s after the stop
    )
    r = Rig(32, period=20)
    r.ev("B")
    r.until(lambda c: pwm(c), 1000)
    t0 = r.t
    changes = []
    last = r.c.duty
    for row in rows:
        at, act, amps = row
        while r.t < t0 + at - 20:
            r.step()
            if r.c.duty != last:
                changes.append(r.t - t0)
                last = r.c.duty
        if act is not None:
            r.e.set_limit("site", act[1], hard=act[0] == "hard")
        r.step()
        if r.c.duty != last:
            changes.append(r.t - t0)
            last = r.c.duty
        mptest.eq(r.c.current_a, amps, "row", row)
    mptest.eq(changes, [5000, 10000, 10500, 15500, 20500, 21000, 26000])


def test_set_limit_bad_input_changes_nothing():
    bad = (
        ("x", -1, None), ("x", 80.5, None), ("x", "10", None), ("x", True, None),
        ("x", NAN, None), ("x", INF, None), ("x", [10], None),
        (None, 10, None), ("", 10, None), (5, 10, None), (b"x", 10, None), ("x" * 33, 10, None),
        ("max", 10, None), ("cable", 10, None), ("fallback", 10, None),
        ("x", 10, -5), ("x", 10, 0), ("x", 10, 1.5), ("x", 10, True), ("x", 10, "100"),
    )
    for row in bad:
        r = Rig(32)
        r.e.set_limit("x", 20, ttl_ms=60000)
        r.ev("B")
        r.run(200)
        before = _offer(r)
        mptest.raises(ValueError, r.e.set_limit, *row)
        r.run(40000)  # the 60 s TTL of the good limit is untouched
        mptest.eq(_offer(r), before, "row", row)
        r.run(20000)
        mptest.eq(r.c.source, "fallback", "row", row)


def test_too_many_sources():
    e = Evse(32, selftest=False)
    for i in range(8):
        e.set_limit("s%d" % i, 20 + i)
    mptest.raises(ValueError, e.set_limit, "s8", 10)
    e.set_limit("s3", 10)  # an existing source can still change
    e.set_limit("s0", None)
    e.set_limit("s8", 9)  # a freed slot is reused
    c = e.step(0, Sense(cp_high_mv=12000))
    mptest.eq((c.available_a, c.source), (9, "s8"))
    e.set_limit("nope", None)  # clearing an unknown source is a no-op


def test_bad_settings_are_rejected():
    rows = (
        ((), {}), ((81,), {}), ((-1,), {}), (("32",), {}), ((True,), {}), ((NAN,), {}),
        ((32,), {"fallback_current_a": 81}), ((32,), {"fallback_current_a": -1}),
        ((32,), {"rcd_retry_ms": -1}), ((32,), {"rcd_max_trips": 0}), ((32,), {"debounce": 0}),
        ((32,), {"debounce": 2.0}), ((32,), {"relay_check_ms": 0}), ((32,), {"c1_timeout_ms": 6001}),
        ((32,), {"duty_interval_ms": -5}), ((32,), {"auth_timeout_ms": 0}),
        ((32,), {"session_log": 0}), ((32,), {"no_such_setting": 1}),
    )
    for row in rows:
        args, kw = row
        try:
            Evse(*args, **kw)
        except (ValueError, TypeError):
            continue
        raise AssertionError("accepted bad settings %r" % (row,))


def test_time_going_backwards_counts_as_no_time():
    # now_ms is compared ticks_diff-style (period 2**30 here): a step back
    # counts as no time, a wrap forward as the time it is
    for base, back in ((10**9, 1000), (5, 2000), ((1 << 30) - 30, 100)):
        e = Evse(32, selftest=False)
        s = Sense(cp_high_mv=9000, cp_low_mv=-12000)
        for i in range(3):
            e.step((base + 20 * i) & ((1 << 30) - 1), s)
        t = (base + 40 - back) & ((1 << 30) - 1)  # back in time
        e.set_limit("backend", 10, ttl_ms=1000)
        c = e.step(t, s)
        mptest.eq(c.source, "backend", base)
        c = e.step((t + 985) & ((1 << 30) - 1), s)  # 985 ms of TTL used
        mptest.eq(c.source, "backend", base)
        c = e.step((t + 1005) & ((1 << 30) - 1), s)
        mptest.eq(c.source, "fallback", base)
