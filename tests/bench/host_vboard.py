"""Virtual boards (CPython): worst control-loop period with the broker down
and with a stalled broker, heap and resident memory of one board, and how
many boards one machine runs side by side (N = 1, 2, 4, ... until the worst
loop period passes 50 ms, the memory gets too large, or ~60 s are spent).

Each board charges a simulated vehicle while it is measured. The loop period
is the agent's own figure (longest gap between two control steps, read over
the control channel), reset once the boards run.
"""
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tools import mpunix, provision  # noqa: E402
from tools.vboard import VBoard, free_port  # noqa: E402

AIM_LOOP_MS = 50
MEASURE_S = 4.0
BUDGET_S = 60.0
RSS_CAP_KB = 4 * 1024 * 1024


def report(name, value, unit="", aim=""):
    if isinstance(value, float):
        value = "%.1f" % value
    print("BENCH %s|%s|%s|%s" % (name, value, unit, aim), flush=True)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _charging(b):
    g = b.get()
    return g if g["contacts"] else None


def _boards(base, image, n, first=0):
    out = []
    for i in range(first, first + n):
        d = os.path.join(base, "b%02d" % i)
        os.makedirs(d, exist_ok=True)
        shutil.copyfile(image, os.path.join(d, "flash.img"))
        out.append(VBoard(d, id="bench%02d" % i).start())
    return out


def _measure(boards):
    for b in boards:
        b.wait_output("agent:", 30)
    for b in boards:
        b.control("plug", state="C", max_current_a=16)
    for b in boards:
        b.wait_for(lambda b=b: _charging(b), 20)
        b.control("reset_stats")
    time.sleep(MEASURE_S)
    worst, ticks = 0, 0
    for b in boards:
        g = b.get()
        worst = max(worst, g["loop_max_ms"])
        ticks += g["ticks"]
    rss = sum(rss_kb(b.pid) for b in boards if b.pid)
    return worst, rss


def _heap_rows(g, lane, aim=""):
    # live heap after gc: the whole process, the vboard ROM script's share
    # (allocated before boot.py runs; C on a real board) and the agent's
    # (boot.py, firmware, its objects) = the difference
    # (rom_heap: the emulated ROM partitions' mapping, flash on a board; counted out too)
    total = g["mem_alloc"] - (g.get("rom_heap") or 0)
    rom = g.get("rom_script") or 0
    report("vboard heap in use, total incl. ROM%s (after gc)" % lane, total / 1024.0, "KB", "")
    report("vboard heap: ROM script's share%s (before boot.py)" % lane, rom / 1024.0, "KB", "")
    report("vboard heap: agent idle%s (total - ROM)" % lane, (total - rom) / 1024.0, "KB", aim)


def _stalled_broker():
    # accepts TCP connections (backlog) but never reads nor answers
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def main():
    t0 = time.time()
    base = tempfile.mkdtemp(prefix="vboard-bench-")
    try:
        down = "127.0.0.1:%d" % free_port()
        img_down = os.path.join(base, "down.img")
        provision.provision(img_down, "bench", broker=down)
        stall = _stalled_broker()
        img_stall = os.path.join(base, "stall.img")
        provision.provision(img_stall, "bench", broker="127.0.0.1:%d" % stall.getsockname()[1])

        b = _boards(os.path.join(base, "one"), img_down, 1)[0]
        try:
            worst, rss = _measure([b])
            g = b.control("get", gc=True)
            report("vboard loop period, worst, broker down", worst, "ms", "< %d" % AIM_LOOP_MS)
            _heap_rows(g, "")
            report("vboard resident memory (one process)", rss / 1024.0, "MB", "")
        finally:
            b.stop()
        b32 = mpunix.mp32_binary()
        if b32:
            # the same board on the 32-bit unix port (the lane boards resemble)
            # (the supervisor starts, and restarts, the process: the variable
            # stays set while this board runs)
            os.environ["MICROPYTHON"] = b32
            b = None
            try:
                b = _boards(os.path.join(base, "one32"), img_down, 1)[0]
                worst, rss = _measure([b])
                g = b.control("get", gc=True)
                _heap_rows(g, ", mp32", "<= 64")
                report("vboard loop period, worst, broker down, mp32", worst, "ms", "< %d" % AIM_LOOP_MS)
            finally:
                if b is not None:
                    b.stop()
                del os.environ["MICROPYTHON"]
        b = _boards(os.path.join(base, "stall"), img_stall, 1)[0]
        try:
            worst, _ = _measure([b])
            report("vboard loop period, worst, broker stalled", worst, "ms", "< %d" % AIM_LOOP_MS)
        finally:
            b.stop()
            stall.close()

        best, n = 0, 1
        while time.time() - t0 < BUDGET_S:
            boards = _boards(os.path.join(base, "n%d" % n), img_down, n)
            try:
                worst, rss = _measure(boards)
            finally:
                for x in boards:
                    x.stop()
            sys.stderr.write("  %2d boards: worst loop %d ms, RSS %.0f MB\n" % (n, worst, rss / 1024))
            if worst > AIM_LOOP_MS or rss > RSS_CAP_KB:
                break
            best = n
            n *= 2
        report("vboards side by side (worst loop <= %d ms)" % AIM_LOOP_MS,
               "%d%s" % (best, "+" if best and best * 2 == n and time.time() - t0 >= BUDGET_S else ""),
               "boards", "%d cores" % os.cpu_count())
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
