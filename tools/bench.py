"""`make bench`: run the benchmark scripts and print one table of figures.

Each script in tests/bench/ is either MicroPython (bench_*.py, run inside the
unix port; its header may say `# bench: heapsize=96K`) or CPython
(host_*.py, run with this interpreter). A script reports a figure by printing
one line:  BENCH <name>|<value>|<unit>|<aim>   (aim may be empty).

Every MicroPython script runs on both lanes, one after the other (never side
by side: the times would be shared-CPU times): the pinned 64-bit unix port
(mp64) and the 32-bit build (mp32, $MP32 or ../shared/mp32/micropython, as in
tests/conftest.py), at the header's heap cap, importing firmware/ as mpy-cross
bytecode (as a release ships it). The table shows both lanes side by side;
CPython (host_*) figures have one value. Unix-port times are desktop times:
host_icount.py adds instruction counts and a Cortex-M estimate.
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


_MPY = []


def mpy_tree():
    """firmware/ compiled once per run (tests/conftest.py does the same)."""
    if os.environ.get("EVSE_TEST_SOURCE"):
        return None
    if not _MPY:
        import tempfile
        from tools import release
        d = tempfile.mkdtemp(prefix="evse-bench-mpy-")
        release.compile_tree(os.path.join(mpunix.ROOT, "firmware"), d, use_mpy=True)
        _MPY.append(d)
    return _MPY[0]


def lanes():
    """[(lane, binary)]: mp64 always, mp32 when a 32-bit binary is found."""
    mp32_binary = mpunix.mp32_binary
    out = [("mp64", mpunix.binary())]
    b32 = mp32_binary()
    if b32:
        out.append(("mp32", b32))
    return out


def run_script(path, binary=None, lane=None):
    name = os.path.basename(path)
    if name.startswith("bench_"):
        h = _header(path)
        # `heapsize_mp64=...`: a lane's own cap (64-bit objects are larger than a board's)
        cmd = mpunix.argv(path, heap=h.get("heapsize_%s" % lane, h["heapsize"]))
        if binary:
            cmd[0] = binary
        extra = [os.path.join(mpunix.ROOT, "tests", "mp"), BENCH_DIR]
        mpy = mpy_tree()
        env = mpunix.env(*(extra + ([mpy] if mpy else [])))
        env["EVSE_PYTHON"] = sys.executable   # for scripts that start a CPython helper
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
    ln = lanes()
    rows = []      # [figure, mp64, mp32, unit, aim]
    for s in scripts:
        if os.path.basename(s).startswith("host_"):
            r, dt = run_script(s)
            rows += [[f, v, "(host)", u, a] for f, v, u, a in r]
            sys.stderr.write("  %-32s %6.1fs\n" % (os.path.basename(s), dt))
            continue
        merged, order = {}, []
        for lane, binary in ln:
            r, dt = run_script(s, binary, lane)
            sys.stderr.write("  %-32s %-5s %6.1fs\n" % (os.path.basename(s), lane, dt))
            for f, v, u, a in r:
                if f not in merged:
                    merged[f] = [f, "", "" if len(ln) > 1 else "(no mp32)", u, a]
                    order.append(f)
                merged[f][1 if lane == "mp64" else 2] = v
        rows += [merged[f] for f in order]
    head = ["figure", "mp64", "mp32", "unit", "aim"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(line)
    print("|".join(" %-*s " % (w, h) for w, h in zip(widths, head)))
    print(line)
    for r in rows:
        print("|".join(" %-*s " % (w, c) for w, c in zip(widths, r)))
    print(line)
    return 1 if any("FAILED" in r[1] or "FAILED" in r[2] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
