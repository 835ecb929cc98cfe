# bench: heapsize=96K
# Cost of one Evse.step() on the unix port: average and worst case in
# microseconds (loop overhead subtracted), and heap allocated per step (gc off).
import gc
import time
import micropython
from benchlib import report
from firmware.evse import Evse, Sense

N = 20000
PERIOD = 20


def _setup(letter):
    e = Evse(32)
    e.set_limit("backend", 16, ttl_ms=10**9)
    s = Sense(cp_high_mv=12000, energy_wh=1234.5)
    t = 10**9   # a small int on a 32-bit port too (ticks stay below 2**30)
    if letter == "C":
        s.cp_high_mv = 9000
        for _ in range(10):
            t += PERIOD
            c = e.step(t, s)
            s.cp_low_mv = -12000
        s.cp_high_mv = 6000
        for _ in range(10):
            t += PERIOD
            c = e.step(t, s)
            s.relay_closed = c.relay
        assert c.relay and 0 < c.duty < 100, "not charging"
    else:
        for _ in range(10):
            t += PERIOD
            e.step(t, s)
    return e, s, t


def _empty(n, t):
    t0 = time.ticks_us()
    for _ in range(n):
        t += PERIOD
    return time.ticks_diff(time.ticks_us(), t0)


def _steps(e, s, n, t):
    step = e.step
    t0 = time.ticks_us()
    for _ in range(n):
        t += PERIOD
        step(t, s)
    return time.ticks_diff(time.ticks_us(), t0)


def _worst(e, s, n, t):
    worst = 0
    step = e.step
    for _ in range(n):
        t += PERIOD
        t0 = time.ticks_us()
        step(t, s)
        d = time.ticks_diff(time.ticks_us(), t0)
        if d > worst:
            worst = d
    return worst


def _alloc(e, s, n, t):
    gc.collect()
    gc.disable()
    try:
        m0 = micropython.mem_current()
        for _ in range(n):
            t += PERIOD
            e.step(t, s)
        return micropython.mem_current() - m0
    finally:
        gc.enable()


def main():
    for letter, what in (("C", "charging (C, PWM on)"), ("A", "idle (A)")):
        e, s, t = _setup(letter)
        gc.collect()
        base = _empty(N, t)
        us = (_steps(e, s, N, t) - base) / N
        report("evse step, %s" % what, us, "us", "")
        report("evse step worst, %s" % what, _worst(e, s, 2000, t + N * PERIOD), "us", "< 1000")
        b = _alloc(e, s, N, t + 2 * N * PERIOD)
        report("evse heap per step, %s" % what, b / N, "bytes", "0")


main()
