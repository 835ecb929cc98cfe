# mptest: prep=tests.prep.updates:make timeout=900 heapsize=192K lanes=own-prep
# Heap: the whole OTA chain, a LittleFS mount and the test rig on the 64-bit
# unix port (the update itself stays under 24 KB: make bench).
# Power-cut campaign over a whole update on a real LittleFS (simflash):
# for EVERY block write N of an uncut run (job start, download + progress
# writes, verify, unpack, boot-record writes, trial boot, confirmation - and
# in a second campaign the health failure + rollback + report), cut the power
# at write N, power on again from the bootstrap (boot.select + a fake agent
# start-up: boot_report, health verdict, job resume) and check after EVERY
# boot that the chosen slot matches its manifest and the record is consistent;
# then that the board ends in the expected steady state.
import os
import gc
import mptest
import boot
from firmware.hal import simflash
from firmware.ota import updater, health, slots, fetch

MP = "/pcut"
R = MP + "/"
BS = 512
BLOCKS = 256
_st = {}


class FileFetcher:
    """Stands in for fetch.Fetcher: serves the image from a host file in fixed
    chunks, so that every run performs exactly the same flash writes."""

    def __init__(self, path, chunk):
        self.path = path
        self.buf = bytearray(chunk)
        self.mv = memoryview(self.buf)
        self.f = None
        self.etag = '"pc2"'
        self.chunk = None

    def start(self, offset=0, limit=None, validator=None):
        self.f = open(self.path, "rb")
        self.f.seek(offset)
        self.pos = offset

    def set_limit(self, limit):
        pass

    def poll(self):
        n = self.f.readinto(self.buf)
        if not n:
            return fetch.DONE
        self.pos += n
        self.chunk = self.mv[:n]
        return n

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


def _factory(url, clock):
    return FileFetcher(_st["img"], 256)


def _job(version):
    return updater.UpdateJob(R, board="evse-sim", running_version=version,
                             fetcher_factory=_factory, persist_every=512)


def _mount(create=False):
    dev = simflash.FileBlockDevice(_st["flash"], BS, BLOCKS if create else None, create=create)
    if create:
        simflash.mkfs(dev)
    simflash.mount(dev, MP)
    _st["dev"] = dev
    return dev


def _unmount():
    # files abandoned by a cut are closed by their finalisers: let them run
    # while the (dead) device can still be read
    gc.collect()
    simflash.umount(MP)
    _st["dev"].close()


def setup():
    d = simflash.tmpdir("evpcut")
    _st["dir"] = d
    _st["flash"] = d + "/flash.bin"
    _st["base"] = d + "/base.bin"
    _st["img"] = mptest.data_path("www/pc2.img")
    _mount(create=True)
    os.mkdir(R + "trust")
    simflash.copy_file(mptest.data_path("keys.bin"), R + "trust/keys.bin")
    boot.write_record(boot.Record("b"), R)
    ev = mptest.data_path("pc1.evb")
    slots.install("a", ev, 0, os.stat(ev)[6], R)
    boot.write_record(boot.Record("a"), R)
    _unmount()
    simflash.copy_file(_st["flash"], _st["base"])


def teardown():
    simflash.umount(MP)
    simflash.rmtree(_st["dir"])


def _drive(job):
    t = 0
    for _ in range(20000):
        if job.poll(t, True, True):
            return True
        if not job.active:
            return False
        t += 10
    raise AssertionError("job stuck in %s" % job.status())


def _consistent(slot, info):
    """Invariants after every boot."""
    mptest.true(slot in ("a", "b"), "a slot was chosen", info)
    mptest.true(boot.verify_slot(slot, R), "chosen slot matches its manifest", slot)
    rec = boot.read_record(R)
    mptest.true(rec.active in ("a", "b") and rec.pending in (None, "a", "b"), rec)
    mptest.true(rec.pending != rec.active, "pending is the other slot", rec)
    if info["trial"]:
        mptest.eq(slot, rec.pending)
    else:
        mptest.eq(slot, rec.active)
    version = boot.read_manifest(slot, R)["version"]
    mptest.true(version in ("1.0.0", "2.0.0"), version)
    # the floor is raised only by a confirmation of 2.0.0
    mptest.true(rec.floor == 0 or (rec.floor == 2 and boot.read_manifest(rec.active, R)["version"] == "2.0.0"),
                "floor", rec)
    return version


def _power_on(verdict, reports):
    """Bootstrap + the agent's start-up. Returns True when it asks to reboot."""
    slot, info = boot.select(R)
    version = _consistent(slot, info)
    rep = health.boot_report(R)
    if rep is not None:
        reports.append(rep)
    if info["trial"]:
        if verdict:
            st = health.settle(True, None, R)
            if st:
                reports.append((st, None, None))
            return False
        health.settle(False, "cp_selftest_failed", R)
        return True
    job = _job(version)
    if job.resume():
        return _drive(job)
    return False


def _scenario(verdict, reports):
    job = _job("1.0.0")
    job.start({"requestId": 5, "location": "http://updates.invalid/pc2.img"})
    if _drive(job):
        for _ in range(8):
            if not _power_on(verdict, reports):
                break


def _final(verdict, reports, n=0):
    rec = boot.read_record(R)
    ver = boot.read_manifest(rec.active, R)["version"]
    if verdict:
        mptest.eq((ver, rec.pending, rec.floor), ("2.0.0", None, 2), "cut", n)
    else:
        mptest.eq((ver, rec.pending, rec.floor), ("1.0.0", None, 0), "cut", n)
        mptest.true(any(r[0] == "InstallationFailed" for r in reports), reports, "cut", n)
    mptest.eq(updater.load_job(R), None, "cut", n)
    for s in ("a", "b"):
        try:
            os.stat(slots.staging_path(s, R))
            raise AssertionError("staging file left behind (cut %d)" % n)
        except OSError:
            pass


def _campaign(verdict):
    # the uncut run: how many block writes does the whole update take?
    simflash.copy_file(_st["base"], _st["flash"])
    dev = _mount()
    w0 = dev.writes
    reports = []
    _scenario(verdict, reports)
    total = dev.writes - w0
    _final(verdict, reports)
    _unmount()
    mptest.true(total > 50, "writes in an update", total)
    tried = recovered = 0
    for n in range(1, total + 1):
        simflash.copy_file(_st["base"], _st["flash"])
        dev = _mount()
        dev.cut_after(n)
        reports = []
        try:
            _scenario(verdict, reports)
        except Exception:
            # PowerCut, or what littlefs / the job made of it: only acceptable
            # once the power is off
            if not dev.dead:
                raise
        mptest.true(dev.dead, "write %d of %d was reached" % (n, total))
        tried += 1
        _unmount()
        # power on again, as many times as the board reboots itself
        _mount()
        reboots = 0
        while _power_on(verdict, reports):
            reboots += 1
            mptest.true(reboots < 8, "reboot loop after cut", n)
        rec = boot.read_record(R)
        if not reports and updater.load_job(R) is None:
            # cut before the job was persisted: the request is lost, the old
            # firmware runs untouched; the backend sends it again
            mptest.eq((rec.active, rec.pending, rec.floor), ("a", None, 0), "cut", n)
            _scenario(verdict, reports)
        _final(verdict, reports, n)
        _unmount()
        recovered += 1
    print("cut points tried %d / recovered %d (%s)" % (tried, recovered,
                                                      "confirm" if verdict else "rollback"))
    mptest.eq(recovered, tried)


def test_powercut_every_write_update_and_confirm():
    _campaign(True)


def test_powercut_every_write_update_and_rollback():
    _campaign(False)
