# mptest: prep=tests.prep.updates:make timeout=300 heapsize=192K lanes=own-prep
# Heap: the whole OTA chain, a LittleFS mount and the test rig on the 64-bit
# unix port (the update itself stays under 24 KB: make bench).
# The update job loaded on demand (firmware/ota/ondemand.py): the OTA chain is
# imported only while a job exists and dropped when it ends.
import os
import sys
import gc
import time
import mptest
import boot
from firmware.hal import simflash
from firmware.ota import ondemand

MP = "/odm"
R = MP + "/"
_dev = [None, None]
_CHAIN = ("updater", "fetch", "image", "ed25519", "sha512", "bundle", "slots")


def _loaded():
    return [m for m in _CHAIN if ("firmware.ota." + m) in sys.modules]


def setup():
    ondemand.release()
    d = simflash.tmpdir("evodm")
    dev = simflash.FileBlockDevice(d + "/flash.bin", 4096, 96, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, MP)
    _dev[0], _dev[1] = dev, d
    os.mkdir(R + "trust")
    simflash.copy_file(mptest.data_path("keys.bin"), R + "trust/keys.bin", bytearray(1024))
    from firmware.ota import slots
    boot.write_record(boot.Record("b"), R)
    ev = mptest.data_path("v1.evb")
    slots.install("a", ev, 0, os.stat(ev)[6], R)
    boot.write_record(boot.Record("a"), R)
    del slots
    ondemand.release()


def teardown():
    simflash.umount(MP)
    _dev[0].close()
    simflash.rmtree(_dev[1])
    ondemand.release()


def _url(name):
    with open(mptest.data_path("port")) as f:
        port = int(f.read())
    return "http://127.0.0.1:%d/%s" % (port, name)


def _drive(u, steps=200000):
    t = 0
    for _ in range(steps):
        if u.poll(t, True, True):
            return True
        if not u.active:
            return False
        t += 5
        time.sleep_ms(0)
    raise AssertionError("job did not settle: %s" % u.status())


def _new(log):
    return ondemand.OnDemandUpdater(R, "evse-sim", "1.0.0", None,
                                    on_status=lambda s, r, p, w: log.append((s, w)))


def test_trial_boot_reads_the_job_without_the_chain():
    from firmware.ota import health
    mptest.eq(health.boot_report(R), None)
    mptest.eq(_loaded(), [])


def test_nothing_loaded_without_a_job():
    ondemand.release()     # health (the test before) brought job.py along
    log = []
    u = _new(log)
    mptest.eq(u.resume(), False)
    mptest.eq(u.poll(0, True, True), False)
    mptest.eq(u.status(), "Idle")
    mptest.eq(_loaded(), [])
    # the job file's helpers are read at resume and not kept either
    mptest.true("firmware.ota.job" not in sys.modules, "job.py dropped after resume")


def test_bad_request_refused_and_chain_dropped():
    u = _new([])
    e = mptest.raises(ValueError, u.start, {"requestId": 1, "location": 5})
    mptest.true("location" in str(e), e)
    mptest.eq(_loaded(), [])
    mptest.eq(u.loaded, False)


def test_rejected_image_ends_the_job_and_frees_the_heap():
    gc.collect()
    before = gc.mem_alloc()
    log = []
    u = _new(log)
    u.start({"requestId": 3, "location": _url("v2_tampered.img"), "retries": 0, "retryInterval": 1})
    mptest.true("updater" in _loaded(), _loaded())
    mptest.eq(_drive(u), False)
    mptest.eq(log[-1][0], "InvalidSignature", log)
    mptest.eq(u.status(), "InvalidSignature")
    mptest.eq(_loaded(), [])
    del u
    gc.collect()
    # interned names stay (qstrs are never freed); the code and the job do not
    mptest.true(gc.mem_alloc() - before < 30000, "heap kept: %d" % (gc.mem_alloc() - before))


def test_full_update_then_reboot_drops_the_chain():
    log = []
    u = _new(log)
    mptest.eq(u.start({"requestId": 9, "location": _url("v2.img")}), "Accepted")
    mptest.eq(_drive(u), True)
    mptest.eq(log[-1][0], "InstallRebooting", log)
    mptest.true(u.loaded, "kept until the reboot")
    mptest.eq(boot.read_record(R).pending, "b")
    # after the reboot a new agent finds the job waiting for its trial verdict
    ondemand.release()
    u2 = _new([])
    mptest.eq(u2.resume(), False)
    mptest.eq(_loaded(), [])
