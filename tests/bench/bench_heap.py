# bench: heapsize=256K
# Heap each firmware module holds once imported (gc.mem_alloc after
# gc.collect, in import order), as .mpy loaded into RAM (how the boards run
# today) and from a ROMFS image (vfs.VfsRom: bytecode executed in place from
# flash; image from host_01_prep_romfs.py). Each way is measured in a fresh
# interpreter (interned names would otherwise be shared), started with
# os.system. "idle set" = what the agent imports to run; "OTA chain" = what
# firmware/ota/ondemand.py loads for an update and drops after it.
import os
import sys
from benchlib import report

# (boot: the bootstrap, imported from source; firmware.config, firmware.commands,
# firmware.hadisco, firmware.sessionlog and firmware.ota.job are loaded on demand
# and dropped: bench_agent_heap.py measures them and the objects of an agent)
IDLE = ("boot", "firmware.evse", "firmware.hal.sim", "firmware.report",
        "umqtt.simple", "firmware.mqtt", "firmware.lazy", "firmware.ota.ondemand", "firmware.agent")
OTA = ("firmware.ota.health", "firmware.ota.sha512", "firmware.ota.ed25519", "firmware.ota.image",
       "firmware.ota.fetch", "firmware.ota.bundle", "firmware.ota.slots", "firmware.ota.updater")
ROMFS = (os.getenv("EVSE_OTA_BENCH_DIR") or "/tmp/evse-ota-bench") + "/fw.romfs"


def child(mode, out):
    import gc
    if mode == "rom":
        import vfs
        with open(ROMFS, "rb") as f:
            img = f.read()
        vfs.mount(vfs.VfsRom(img), "/rom")
        sys.path.insert(0, "/rom")
    gc.collect()
    a0 = gc.mem_alloc()
    with open(out, "w") as f:
        for m in IDLE + OTA:
            __import__(m)
            gc.collect()
            a1 = gc.mem_alloc()
            f.write("%s %d\n" % (m, a1 - a0))
            a0 = a1


def measure(mode):
    out = "/tmp/evse-bench-heap-%s-%d" % (mode, id(mode))
    os.system("%s -X heapsize=320K %s child %s %s" % (sys.executable, __file__, mode, out))
    res = {}
    with open(out) as f:
        for line in f:
            m, n = line.split()
            res[m] = int(n)
    os.remove(out)
    return res


def main():
    mpy = measure("mpy")
    for m in IDLE + OTA:
        report("heap of %s (%s)" % (m, "source, outside the slots" if m == "boot" else ".mpy"),
               mpy[m] / 1024, "KB")
    report("heap of the idle set (.mpy)", sum(mpy[m] for m in IDLE) / 1024, "KB")
    report("heap of the OTA chain (.mpy)", sum(mpy[m] for m in OTA) / 1024, "KB")
    try:
        os.stat(ROMFS)
    except OSError:
        report("heap from ROMFS", "no image (host_01_prep_romfs.py)", "")
        return
    rom = measure("rom")
    report("heap of the idle set (ROMFS)", sum(rom[m] for m in IDLE) / 1024, "KB")
    report("heap of the OTA chain (ROMFS)", sum(rom[m] for m in OTA) / 1024, "KB")


if len(sys.argv) > 2 and sys.argv[1] == "child":
    child(sys.argv[2], sys.argv[3])
else:
    main()
