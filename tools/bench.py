"""`make bench`: run the benchmark scripts and print one table of figures.

Each script in tests/bench/ is either MicroPython (bench_*.py, run inside the
unix port; its header may say `# bench: heapsize=96K`) or CPython
(host_*.py, run with this interpreter). A script reports a figure by printing
one line:  BENCH <name>|<value>|<unit>|<aim>   (aim may be empty).
"""
import os
import subprocess
import sys
import time

from tools import mpunix

BENCH_DIR = os.path.join(mpunix.ROOT, "tests", "bench")


def _header(path):
    opts = {"heapsize": mpunix.DEFAULT_HEAP}
    with open(path) as f:
        for line in f:
            if line.startswith("# bench:"):
                for kv in line[len("# bench:"):].split():
                    k, _, v = kv.partition("=")
                    opts[k] = v
    return opts


def run_script(path):
    name = os.path.basename(path)
    if name.startswith("bench_"):
        cmd = mpunix.argv(path, heap=_header(path)["heapsize"])
        env = mpunix.env(os.path.join(mpunix.ROOT, "tests", "mp"), BENCH_DIR)
    else:
        cmd = [sys.executable, path]
        env = dict(os.environ, PYTHONPATH=mpunix.ROOT)
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    rows = []
    for line in p.stdout.split("\n"):
        if line.startswith("BENCH "):
            parts = (line[6:].split("|") + ["", "", ""])[:4]
            rows.append(parts)
    if p.returncode != 0:
        rows.append([name, "FAILED (exit %d)" % p.returncode, "", p.stderr.strip().split("\n")[-1][:60]])
    return rows, time.time() - t0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # host_* first: host_00_prep_images.py writes images the device benches read
    scripts = sorted((
        os.path.join(BENCH_DIR, f) for f in os.listdir(BENCH_DIR)
        if (f.startswith("bench_") or f.startswith("host_")) and f.endswith(".py")
        and (not argv or any(a in f for a in argv))),
        key=lambda p: (not os.path.basename(p).startswith("host_"), p))
    rows = []
    for s in scripts:
        r, dt = run_script(s)
        rows += r
        sys.stderr.write("  %-32s %6.1fs\n" % (os.path.basename(s), dt))
    head = ["figure", "value", "unit", "aim"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(4)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(line)
    print("|".join(" %-*s " % (w, h) for w, h in zip(widths, head)))
    print(line)
    for r in rows:
        print("|".join(" %-*s " % (w, c) for w, c in zip(widths, r)))
    print(line)
    return 1 if any("FAILED" in r[1] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
