# mptest: heapsize=96K
# Power-on self-test and the local / remote clear_faults (issue 8).
import mptest
from firmware.evse import Evse, Sense
from test_evse_rig import Rig


class _Board:
    # the self-test's view of a board: CP generator rails, RCD input and test winding
    def __init__(self, neg=True, pos=True, rcd_trips=True, rcd_releases=True, rcd_idle=False,
                 welded=False):
        self.neg, self.pos, self.trips, self.rel = neg, pos, rcd_trips, rcd_releases
        self.rcd = rcd_idle
        self.welded = welded
        self.was_on = False


def _selftest(b, deb=2, period=20, limit=5000, rcd_selftest=True):
    e = Evse(32, debounce=deb, selftest=True, rcd_selftest=rcd_selftest)
    s = Sense()
    c = None
    t = 1000
    for _ in range(limit // period):
        duty = 100.0 if c is None else c.duty
        if duty == 0.0:
            s.cp_high_mv = -12000 if b.neg else 0
        else:
            s.cp_high_mv = 12000 if b.pos else 0
        on = c is not None and c.rcd_test
        if on and b.trips:
            b.rcd = True
        if b.was_on and not on and b.rel:
            b.rcd = False
        b.was_on = on
        s.rcd_fault = b.rcd
        s.relay_closed = b.welded
        c = e.step(t, s)
        t += period
        mptest.true(not c.relay, "relay closed during the self-test")
        if e.selftest is not None:
            return e, c, t, s
    return e, c, t, s


def test_power_on_self_test():
    # (board, result, fault)
    rows = (
        (_Board(), "ok", None),
        (_Board(neg=False), "cp_negative", "selftest_failed"),
        (_Board(pos=False), "cp_positive", "selftest_failed"),
        (_Board(rcd_idle=True), "rcd_input", "selftest_failed"),  # broken wire reads tripped
        (_Board(rcd_trips=False), "rcd_no_trip", "selftest_failed"),
        (_Board(rcd_releases=False), "rcd_stuck", "selftest_failed"),
        (_Board(welded=True), "relay_welded", "relay_welded"),
    )
    for row in rows:
        b, result, fault = row
        e, c, t, s = _selftest(b)
        mptest.eq(e.selftest, result, "row", result)
        mptest.eq(c.fault, fault, "row", result)
        if fault is not None:
            s.cp_high_mv = 6000
            for _ in range(200):
                t += 20
                c = e.step(t, s)
            mptest.eq((c.state, c.relay, c.session_active), ("F", False, False), result)
            mptest.eq(e.clear_faults(local=False), ("relay_welded", "selftest_failed") if b.welded else ("selftest_failed",),
                      "a remote clear leaves it", result)
    e, c, t, s = _selftest(_Board(rcd_trips=False), rcd_selftest=False)
    mptest.eq(e.selftest, "ok", "without an RCD test output")


def test_self_test_reruns_after_a_local_clear():
    b = _Board(rcd_trips=False)
    e, c, t, s = _selftest(b)
    mptest.eq(e.selftest, "rcd_no_trip")
    e.clear_faults()
    mptest.eq(e.selftest, None, "running again")
    b.trips = True
    c = None
    for _ in range(100):
        duty = 100.0 if c is None else c.duty
        s.cp_high_mv = -12000 if duty == 0.0 else 12000
        on = c is not None and c.rcd_test
        s.rcd_fault = on
        t += 20
        c = e.step(t, s)
    mptest.eq((e.selftest, c.fault), ("ok", None))


def test_remote_clear_keeps_latched_faults():
    # (how it latched, code)
    for row in (("rcd", "rcd_latched"), ("weld", "relay_welded")):
        how, code = row
        r = Rig(rcd_max_trips=1)
        r.charging()
        if how == "rcd":
            r.rcd = True
            r.step()
            r.rcd = False
        else:
            r.weld = True
            r.ev("B")
        r.run(2000)
        mptest.eq(r.c.fault, code)
        r.weld = False
        mptest.eq(r.e.clear_faults(local=False), (code,), row)
        c = r.run(3000)
        mptest.eq((c.fault, c.state, c.relay), (code, "F", False), "after a remote clear", row)
        mptest.eq(r.e.clear_faults(), (), row)  # the installer's local reset
        r.ev("C")
        mptest.true(r.until(lambda c: c.relay, 8000) is not None, "charges after a local clear", row)


def test_remote_clears_cannot_keep_the_rcd_from_latching():
    # each trip followed by a remote clear (ends the retry delay, keeps the count)
    r = Rig(rcd_max_trips=3, rcd_retry_ms=600000)
    r.charging()
    for n in (1, 2, 3):
        r.rcd = True
        r.step()
        r.rcd = False
        r.step()
        left = r.e.clear_faults(local=False)
        if n < 3:
            mptest.eq(left, (), "trip", n)
            mptest.true(r.until(lambda c: c.relay, 8000) is not None, "re-closes after trip", n)
    mptest.eq(left, ("rcd_latched",))
    c = r.run(10000)
    mptest.eq((c.fault, c.state, c.relay), ("rcd_latched", "F", False))
