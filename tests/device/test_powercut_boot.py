# mptest: prep=tests.prep.bundles:make
# Power-loss campaign: a real LittleFS image (VfsLfs2 on a FileBlockDevice)
# is cut after EVERY block write/erase N of (1) an update: install slot b from
# the staged bundle + set_pending + trial boot + confirm, and (2) a rollback:
# three trial boots without confirmation + the fallback boot. After each cut
# the flash file is mounted again, as a board would power up, boot.select()
# runs, and the outcome is checked.
import os
import gc
import mptest
import boot
from firmware.ota import slots
from firmware.hal import simflash
from firmware.hal.simflash import FileBlockDevice

MNT = "/flash"
R = MNT + "/"
BS = 512
BLOCKS = 192
T = None


def setup():
    global T
    T = simflash.tmpdir("evpc")


def teardown():
    simflash.umount(MNT)
    simflash.rmtree(T)


def _mount(path):
    dev = FileBlockDevice(path, BS)
    simflash.mount(dev, MNT, mtime=False)
    return dev


def _unmount(dev):
    # files abandoned by a cut are closed by their finalisers: let them run
    # now, while the (dead: writes dropped) device can still be read
    gc.collect()
    simflash.umount(MNT)
    dev.close()


def _host_to_flash(src, dst):
    simflash.copy_file(src, dst)


def _base():
    """Flash image: slot a (pc1) installed and confirmed, pc2 staged for b."""
    img = T + "/base.img"
    dev = FileBlockDevice(img, BS, BLOCKS, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, MNT, mtime=False)
    os.mkdir(R + "slots")
    _host_to_flash(mptest.data_path("pc1.evb"), slots.staging_path("a", R))
    p = slots.staging_path("a", R)
    slots.install("a", p, 0, os.stat(p)[6], R)
    os.remove(p)
    boot.write_record(boot.Record("a"), R)
    _host_to_flash(mptest.data_path("pc2.evb"), slots.staging_path("b", R))
    mptest.true(slots.verify_slot("a", R))
    _unmount(dev)
    return img


def _update():
    p = slots.staging_path("b", R)
    slots.install("b", p, 0, os.stat(p)[6], R)
    boot.set_pending("b", sec_counter=2, root=R)
    slot, info = boot.select(R)
    if slot != "b" or not info["trial"]:
        raise AssertionError("update scenario: trial boot of b expected, got %r" % (slot,))
    boot.confirm(R)


def _rollback():
    for i in range(3):
        slot, info = boot.select(R)
        if slot != "b":
            raise AssertionError("trial %d: got %r" % (i, slot))
    slot, info = boot.select(R)
    if slot != "a" or info["reason"] != "trials_exhausted":
        raise AssertionError("fallback expected, got %r %r" % (slot, info["reason"]))


def _check_boot(label, n, old_ok_required):
    slot, info = boot.select(R)
    mptest.true(slot in ("a", "b"), label, "cut", n, "no slot chosen", info)
    ok, why, _ = boot.check_slot(slot, R)
    mptest.true(ok, label, "cut", n, "chosen slot", slot, why)
    rec = boot.read_record(R)
    mptest.true(boot.verify_slot(rec.active, R), label, "cut", n, "active does not verify", rec)
    if rec.pending is not None:
        mptest.eq(slot, rec.pending, label, "cut", n)
        mptest.true(info["trial"] and boot.verify_slot(rec.pending, R), label, "cut", n)
    else:
        mptest.eq(slot, rec.active, label, "cut", n)
    if old_ok_required:  # the running slot a is never touched by the update
        mptest.true(boot.verify_slot("a", R), label, "cut", n, "slot a damaged")
    return slot


def _campaign(label, base, scenario, old_ok_required, torn=0):
    work = T + "/work.img"
    # dry run: how many block writes does the scenario make?
    simflash.copy_file(base, work)
    dev = _mount(work)
    w0 = dev.writes
    scenario()
    total = dev.writes - w0
    _unmount(dev)
    tried = recovered = 0
    outcomes = {}
    buf = bytearray(4096)
    for n in range(1, total + 1):
        simflash.copy_file(base, work, buf)
        dev = _mount(work)
        dev.cut_after(n, torn)
        try:
            scenario()
        except Exception:
            # PowerCut, or what the code made of it: a `with` block's close()
            # on the dead flash may fail and replace it. Anything raised on a
            # live device is a real failure.
            if not dev.dead:
                raise
        # select() survives an unwritable record (it boots the active slot),
        # so the scenario may also end normally after the cut
        cut = dev.dead
        _unmount(dev)
        mptest.true(cut, label, "cut", n, "was not reached", total)
        tried += 1
        dev = _mount(work)
        slot = _check_boot(label, n, old_ok_required)
        outcomes[slot] = outcomes.get(slot, 0) + 1
        _unmount(dev)
        recovered += 1
    print("powercut %s: %d cut points, %d recovered (%s)" % (label, tried, recovered, outcomes))
    mptest.eq(recovered, tried)
    mptest.true(tried >= 10, "too few cut points", tried)
    return outcomes


def test_powercut_across_update():
    base = _base()
    out = _campaign("update", base, _update, True)
    # both outcomes happen: cut early -> old slot a, cut late -> new slot b
    mptest.true(out.get("a", 0) > 0 and out.get("b", 0) > 0, out)


def test_powercut_across_update_torn_writes():
    base = _base()
    _campaign("update/torn", base, _update, True, torn=64)


def test_powercut_across_rollback():
    base = _base()
    # state before the campaign: b installed and pending (no cut)
    dev = _mount(base)
    p = slots.staging_path("b", R)
    slots.install("b", p, 0, os.stat(p)[6], R)
    boot.set_pending("b", sec_counter=2, root=R)
    _unmount(dev)
    out = _campaign("rollback", base, _rollback, True)
    mptest.true(out.get("a", 0) > 0 and out.get("b", 0) > 0, out)
