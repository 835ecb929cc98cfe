# Helpers for MicroPython bench scripts (tests/bench/bench_*.py).
import gc
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


def headroom(fn, hi=48000):
    """Smallest free heap (bytes) with which fn() still returns True: the
    rest of the heap is filled with ballast before each try."""
    def ok(h):
        bal = [None] * 300
        n = 0
        gc.collect()
        try:
            hole = bytearray(h)   # keep the headroom contiguous where the heap allows
        except MemoryError:
            hole = None
        for size in (8192, 2048, 512, 128, 32):
            while n < 300 and gc.mem_free() - size - 32 > (h if hole is None else 0):
                try:
                    bal[n] = bytearray(size)
                    n += 1
                except MemoryError:
                    break
        hole = None
        gc.collect()
        try:
            r = bool(fn())
        except Exception:   # MemoryError, or an error a starved callee reports instead
            r = False
        bal = None
        return r
    lo = 0
    if not ok(hi):
        return -1
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
