# bench: heapsize=128K
# (128K: this script imports firmware/evse.py from source, whose compile peaks
# near 112K on the 64-bit port; releases ship .mpy, see docs/charging.md)
# Cost of one Evse.step() on the unix port: average and worst case in
# microseconds (loop overhead subtracted), and heap allocated per step (gc off).
import gc
import time
import micropython
from benchlib import report
from firmware.evse import Evse, Sense

N = 20000
PERIOD = 20
MASK = (1 << 30) - 1   # now_ms is a ticks_ms() value of period 2**30 (boards)
_LAST = MASK - PERIOD


def _add(t):
    # ticks_add(t, PERIOD) in small ints: the runs below cross the wrap
    return t - _LAST - 1 if t > _LAST else t + PERIOD


def _setup(letter):
    e = Evse(32, selftest=False)
    e.set_limit("backend", 16, ttl_ms=10**8)
    s = Sense(cp_high_mv=12000, energy_wh=1234.5, current_a=16.0, temperature_c=31.5)
    t = MASK - N * PERIOD   # each measurement below crosses the clock wrap
    if letter == "C":
        s.cp_high_mv = 9000
        for _ in range(10):
            t = _add(t)
            c = e.step(t, s)
            s.cp_low_mv = -12000
        s.cp_high_mv = 6000
        for _ in range(10):
            t = _add(t)
            c = e.step(t, s)
            s.relay_closed = c.relay
        assert c.relay and 0 < c.duty < 100, "not charging"
    else:
        for _ in range(10):
            t = _add(t)
            e.step(t, s)
    return e, s, t


def _empty(n, t):
    t0 = time.ticks_us()
    for _ in range(n):
        t = _add(t)
    return time.ticks_diff(time.ticks_us(), t0)


def _steps(e, s, n, t):
    step = e.step
    t0 = time.ticks_us()
    for _ in range(n):
        t = _add(t)
        step(t, s)
    return time.ticks_diff(time.ticks_us(), t0)


def _worst(e, s, n, t):
    worst = 0
    step = e.step
    for _ in range(n):
        t = _add(t)
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
            t = _add(t)
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
        report("evse step worst, %s" % what, _worst(e, s, 2000, t), "us", "< 1000")
        b = _alloc(e, s, N, t)
        report("evse heap per step, %s" % what, b / N, "bytes", "0")


main()
