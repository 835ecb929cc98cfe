"""Instruction counts (CPython driver): one Ed25519 verify and one charging
Evse.step() on each unix port, counted by valgrind (callgrind, "Ir") as the
difference between a run doing N of them and one doing none
(tests/bench/icount_probe.py), plus a Cortex-M estimate.

Cortex-M estimate (an assumption, stated so that nobody reads desktop ms as
board ms): Cortex-M instructions = 0.64 x the i386 instructions of the 32-bit
port. The ratio is calibrated on the one figure measured on MicroPython's qemu
Cortex-M3 port (issue 9: 56 M instructions per verify for the code of that
day, which counts 87.7 M here on the 32-bit port). Board time = instructions x
CPI / clock with CPI 1.2 (flash wait states, XIP cache misses): RP2040 at
125 MHz, ESP32 at 240 MHz (Xtensa, taken as the same instruction count).
"""
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tools import mpunix, bench  # noqa: E402
mp32_binary = mpunix.mp32_binary

PROBE = os.path.join(ROOT, "tests", "bench", "icount_probe.py")
RATIO = 0.64
CPI = 1.2
CASES = (("ed25519", 2, "ed25519 verify"), ("step", 2000, "evse step (charging)"))


def count(binary, what, n, mpy):
    env = mpunix.env(*([mpy] if mpy else []))
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        binary, "-X", "heapsize=96K", PROBE, what, str(n)],
                       env=env, capture_output=True, text=True, timeout=600)
    m = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError("valgrind run failed: %s" % p.stderr.strip().split("\n")[-1])
    return int(m.group(1))


def main():
    if not shutil.which("valgrind"):
        print("BENCH instruction counts|skipped (no valgrind)||")
        return
    mpy = bench.mpy_tree()
    # the 64-bit port only on request: it costs a minute under valgrind
    # (EVSE_ICOUNT_MP64=1: 59.8 M per verify, 45 k per step when measured)
    lanes = [("mp64", mpunix.binary())] if os.environ.get("EVSE_ICOUNT_MP64") or not mp32_binary() else []
    if mp32_binary():
        lanes.append(("mp32", mp32_binary()))
    for what, n, label in CASES:
        per = {}
        for lane, binary in lanes:
            t0 = time.time()
            per[lane] = (count(binary, what, n, mpy) - count(binary, what, 0, mpy)) / n
            sys.stderr.write("  icount %s %s %.1fs\n" % (what, lane, time.time() - t0))
            print("BENCH %s instructions, %s unix port (valgrind)|%d|instr|" % (label, lane, per[lane]))
        if "mp32" in per:
            m = per["mp32"] * RATIO
            print("BENCH %s Cortex-M estimate (0.64 x mp32)|%d|instr|" % (label, m))
            print("BENCH %s est. RP2040 125 MHz (CPI 1.2)|%.3f|ms|" % (label, m * CPI / 125e3))
            print("BENCH %s est. ESP32 240 MHz (CPI 1.2)|%.3f|ms|" % (label, m * CPI / 240e3))


if __name__ == "__main__":
    main()
