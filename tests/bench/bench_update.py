# bench: heapsize=128K heapsize_mp64=192K
# Peak heap above idle during download + verify + install of a 64 KiB and a
# 1 MiB image (the update job against tools/serve.py, onto LittleFS).
#
# The server and the signed images are prepared by a CPython child process
# (`python -m tests.prep.updates bench DIR`, stopped by its pid at the end).
# Heap: gc.threshold() keeps garbage small, and gc.mem_alloc() is sampled
# after every job step AND inside every flash block read/write (so the
# install step, one long call, is sampled too). Idle = modules imported, job
# constructed, flash mounted, after gc.collect(), after one warm-up update
# (first-use allocations such as interned names stay for good). 128K (mp32): the
# heap of an ESP32 without PSRAM; tools/bench.py runs firmware as .mpy. The
# 64-bit lane runs at 192K: its objects and GC blocks are twice a board's, and
# at 128K its install step finds no block for the deflate window.
# Then REPEAT more 64 KiB updates in the same interpreter (no reset: the
# fragmentation of each update stays for the next) and how many succeeded.
import gc
import os
import sys
import time
from benchlib import report
import boot
from firmware.hal import simflash
from firmware.ota import updater, slots

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
ROOT = HERE + "/../.."
# the CPython that runs the server: $EVSE_PYTHON (set by tools/bench.py), else
# the one next to the micropython binary (the venv's)
PY = os.getenv("EVSE_PYTHON") or sys.executable.rsplit("/", 1)[0] + "/python"
MP = "/bench"
R = MP + "/"
_peak = [0]
REPEAT = 20


def _sample():
    a = gc.mem_alloc()
    if a > _peak[0]:
        _peak[0] = a


class Dev(simflash.FileBlockDevice):
    def readblocks(self, block, buf, off=0):
        _sample()
        return simflash.FileBlockDevice.readblocks(self, block, buf, off)

    def writeblocks(self, block, buf, off=None):
        _sample()
        return simflash.FileBlockDevice.writeblocks(self, block, buf, off)


def _wait_file(p, secs=120):
    for _ in range(secs * 20):
        try:
            os.stat(p)
            return
        except OSError:
            time.sleep_ms(50)
    raise RuntimeError("server not ready: " + p)


def run(tmp, d, name):
    dev = Dev(tmp + "/flash.bin", 4096, 800, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, MP)
    try:
        os.mkdir(R + "trust")
        simflash.copy_file(d + "/keys.bin", R + "trust/keys.bin")
        boot.write_record(boot.Record("b"), R)
        ev = d + "/v1.evb"
        slots.install("a", ev, 0, os.stat(ev)[6], R)
        boot.write_record(boot.Record("a"), R)
        with open(d + "/port") as f:
            port = int(f.read())
        job = updater.UpdateJob(R, board="evse-sim", running_version="1.0.0")
        req = {"requestId": 1, "location": "http://127.0.0.1:%d/%s.img" % (port, name)}
        gc.collect()
        idle = gc.mem_alloc()
        _peak[0] = idle
        gc.threshold(2048)
        job.start(req)
        t0 = time.ticks_ms()
        now = 0
        polls = 0
        while True:
            done = job.poll(now, True, True)
            _sample()
            polls += 1
            now += 1
            if done or not job.active:
                break
        dt = time.ticks_diff(time.ticks_ms(), t0)
        gc.threshold(-1)
        ok = job.status() == "InstallRebooting" and slots.verify_slot("b", R)
        if not ok:
            raise RuntimeError("update of %s failed: %s" % (name, job.status()))
        return _peak[0] - idle, dt, polls
    finally:
        simflash.umount(MP)
        dev.close()


def main():
    tmp = simflash.tmpdir("evbench")
    d = tmp + "/prep"
    os.system("cd %s && %s -m tests.prep.updates bench %s >%s/server.log 2>&1 & echo $! > %s/pid"
              % (ROOT, PY, d, tmp, tmp))
    try:
        _wait_file(d + "/ready")
        res = {}
        run(tmp, d, "b64k")  # warm-up: one-time allocations (interned names, first socket use)
        for name, label in (("b64k", "64KiB"), ("b1m", "1MiB")):
            peak, dt, polls = run(tmp, d, name)
            res[label] = peak
            report("update %s peak heap above idle" % label, peak // 1024, "KB", "< 24")
            report("update %s download+verify+install" % label, dt, "ms", "")
        report("update peak heap 1MiB - 64KiB", (res["1MiB"] - res["64KiB"]) // 1024, "KB", "~0")
        ok = 0
        for _ in range(REPEAT):
            try:
                run(tmp, d, "b64k")
                ok += 1
            except Exception as e:  # MemoryError or a failed job: counted, the next one runs
                sys.print_exception(e)
        report("64KiB updates in a row without reset, succeeded", "%d/%d" % (ok, REPEAT), "", "all")
    finally:
        with open(tmp + "/pid") as f:
            pid = int(f.read())
        os.system("kill %d" % pid)
        simflash.rmtree(tmp)


main()
