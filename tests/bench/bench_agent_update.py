# bench: heapsize=320K
# A complete update inside the running agent (not the update job alone, as
# bench_update.py measures): boot.py, the agent with its MQTT link (broker
# down), the sim board and LittleFS, then update_firmware as a backend
# command, the OTA chain loaded on demand, download + verify + install of a
# 64 KiB image while the control loop runs, until the agent schedules its
# reboot into the new slot. Each heap size is a fresh interpreter (started
# with os.system, as bench_heap.py does); the figure is the smallest heap of
# HEAPS at which the update succeeds, and the live heap at its peak.
# Server and images: `python -m tests.prep.updates bench DIR` (bench_update.py).
import os
import sys
import time
from benchlib import report

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
ROOT = HERE + "/../.."
PY = os.getenv("EVSE_PYTHON") or sys.executable.rsplit("/", 1)[0] + "/python"
HEAPS = ("128K", "144K", "160K", "176K", "192K", "224K", "256K", "320K")
MP = "/bagup"
R = MP + "/"


def child(tmp, d, out):
    import boot        # a board compiles and runs boot.py first
    import gc
    from firmware.hal import simflash
    from firmware.hal.sim import SimBoard, SimReset
    from firmware.agent import Agent
    from firmware.ota import slots
    from firmware.ota import ondemand
    peak = [0]
    top = [0, None]      # highest sample between control periods, and the job's status then

    class Dev(simflash.FileBlockDevice):
        def readblocks(self, block, buf, off=0):
            a = gc.mem_alloc()
            if a > peak[0]:
                peak[0] = a
            return simflash.FileBlockDevice.readblocks(self, block, buf, off)

        def writeblocks(self, block, buf, off=None):
            a = gc.mem_alloc()
            if a > peak[0]:
                peak[0] = a
            return simflash.FileBlockDevice.writeblocks(self, block, buf, off)

    dev = Dev(tmp + "/flash.bin", 4096, 800, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, MP)
    res = "failed"
    idle = 0
    try:
        os.mkdir(R + "trust")
        simflash.copy_file(d + "/keys.bin", R + "trust/keys.bin")
        boot.write_record(boot.Record("b"), R)
        ev = d + "/v1.evb"
        slots.install("a", ev, 0, os.stat(ev)[6], R)
        boot.write_record(boot.Record("a"), R)
        ondemand.release()
        slots = None
        with open(d + "/port") as f:
            port = int(f.read())
        cfg = {"device_id": "bup1", "board": "evse-sim", "max_current_a": 32,
               "fallback_current_a": 6, "telemetry_ms": 10000,
               "mqtt": {"host": "127.0.0.1", "port": 1}}
        b = SimBoard()
        a = Agent(b, cfg, R, {"slot": "a", "version": (1, 0, 0, 0)}, health=None)
        a.start()
        for _ in range(100):
            b.advance(20)
            a.tick(b.ticks_ms())
        gc.collect()
        idle = gc.mem_alloc()
        gc.threshold(2048)
        peak[0] = 0
        # garbage kept small: mem_alloc() samples the live heap
        rep = a.command("update_firmware", {"id": 1, "requestId": 1, "retrieveDateTime": "2020-01-01T00:00:00Z",
                                            "location": "http://127.0.0.1:%d/b64k.img" % port})
        if not rep.get("ok"):
            res = "refused: %s" % rep.get("error")
            return
        reset = False
        for n in range(20000):
            b.advance(20)
            try:
                a.tick(b.ticks_ms())
            except SimReset:
                reset = True     # the agent reboots into the new slot
                break
            m = gc.mem_alloc()
            if m > peak[0]:
                peak[0] = m
            if m > top[0]:
                top[0] = m
                top[1] = a.updater.status()
            if n % 8 == 0:
                time.sleep_ms(1)     # the server thread runs
        gc.threshold(-1)
        st = a.updater.status()
        res = "ok" if reset and st == "InstallRebooting" else "status %s" % st
        if a.errors:
            res += " (errors: %s)" % a.last_error
    except MemoryError as e:
        res = "MemoryError %s" % e
    finally:
        with open(out, "w") as f:
            f.write("%s|%d|%d|%d %s\n" % (res, peak[0] // 1024, idle // 1024 if res == "ok" else 0,
                                          top[0] // 1024, top[1]))
        simflash.umount(MP)
        dev.close()


def _wait_file(p, secs=120):
    for _ in range(secs * 20):
        try:
            os.stat(p)
            return
        except OSError:
            time.sleep_ms(50)
    raise RuntimeError("server not ready: " + p)


def main():
    from firmware.hal import simflash
    tmp = simflash.tmpdir("evbagup")
    d = tmp + "/prep"
    os.system("cd %s && %s -m tests.prep.updates bench %s >%s/server.log 2>&1 & echo $! > %s/pid"
              % (ROOT, PY, d, tmp, tmp))
    try:
        _wait_file(d + "/ready")
        best = None
        for heap in HEAPS:
            out = tmp + "/res-" + heap
            os.system("%s -X heapsize=%s %s child %s %s %s" % (sys.executable, heap, __file__, tmp, d, out))
            try:
                with open(out) as f:
                    res, peak, idle, top = f.read().strip().split("|")
            except OSError:
                res, peak, idle, top = "crashed", "0", "0", ""
            report("in-agent update 64KiB at %s" % heap, res, "", "")
            if res == "ok" and best is None:
                best = heap
                report("in-agent update: live heap idle / peak at %s" % heap, "%s / %s" % (idle, peak), "KB", "")
                report("in-agent update: highest between periods, and when", top, "KB", "")
        report("in-agent update 64KiB: smallest heap that succeeds", best or "none of %s" % ",".join(HEAPS),
               "", "128K")
    finally:
        with open(tmp + "/pid") as f:
            pid = int(f.read())
        os.system("kill %d" % pid)
        simflash.rmtree(tmp)


if len(sys.argv) > 4 and sys.argv[1] == "child":
    child(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    main()
