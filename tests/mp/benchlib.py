# Helpers for MicroPython bench scripts (tests/bench/bench_*.py).
import time


def report(name, value, unit="", aim=""):
    if isinstance(value, float):
        value = "%.3f" % value if value < 10 else "%.1f" % value
    print("BENCH %s|%s|%s|%s" % (name, value, unit, aim))


def time_us(fn, n=1):
    t0 = time.ticks_us()
    for _ in range(n):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / n
