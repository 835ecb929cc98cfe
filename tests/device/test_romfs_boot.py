# mptest: heapsize=160K prep=tests.prep.bundles:make
# Heap: boot.py and bootrom.py/bootev.py are compiled from source here (as on
# a board) beside the test's own modules and two 8 KB emulated partitions
# (flash on a board); 128K (test_bootrec's cap) is short of that on mp64.
# ROMFS slots (bootrom.py, firmware/ota/romslot.py, firmware/hal/simrom.py):
# boot.main() runs the selected slot's code from its ROM image when that
# checks out (size + SHA-256 over the mapped bytes, bound to the MANIFEST),
# and from the slot's files in every other case (corrupted image, wrong
# digest, stale or missing evidence, no partition, a failed import from ROM).
import os
import sys
import mptest
import boot
from firmware.ota import slots, romslot, evidence
from firmware.hal import simflash, simrom

R = None
ROM = None
_SIZE = 8 * 1024


class _Host:
    rom_ioctl = None


def setup():
    global R
    R = simflash.tmpdir("evrom") + "/"


def teardown():
    global ROM
    if ROM is not None:
        ROM.close()
        ROM = None
    sys.modules.pop("_vboard", None)
    try:
        import vfs
        vfs.umount("/rom")
    except OSError:
        pass
    boot._purge(R + "slots/a")
    boot._purge(R + "slots/b")
    simflash.rmtree(R[:-1])


def _inst(slot, name):
    p = mptest.data_path(name + ".evb")
    rec = boot.read_record(R)
    if rec.active == slot and boot.verify_slot(slot, R):
        rec.active = boot.other(slot)
        boot.write_record(rec, R)
    return slots.install(slot, p, 0, os.stat(p)[6], R)


def _rom(parts=2, gate=None):
    global ROM
    ROM = simrom.SimRom([R + "rom%d.img" % i for i in range(parts)], _SIZE, gate=gate, create=True)
    h = _Host()
    h.rom_ioctl = ROM.ioctl
    sys.modules["_vboard"] = h
    return ROM


def _runlog():
    try:
        with open(R + "runlog") as f:
            return [l.split() for l in f.read().split("\n") if l]
    except OSError:
        return []


def _boot(slot="a"):
    boot.write_record(boot.Record(slot), R)
    info = boot.main(R)
    f = getattr(sys.modules.get("firmware.agent"), "__file__", "")
    return info, f


def _ev(i):
    return evidence._unframe(open(R + "slots/rom%d" % i, "rb").read())


def test_good_image_is_mounted_and_the_agent_runs_from_rom():
    _inst("a", "v1")
    _rom()
    mptest.eq(romslot.write("a", R), None)
    ev = _ev(0)
    mptest.eq((ev["slot"], ev["man"]), ("a", evidence.manifest_digest("a", R)))
    mptest.true(0 < ev["n"] <= _SIZE and len(ev["sha"]) == 64, ev)
    info, f = _boot()
    mptest.eq(info.get("rom"), True)
    mptest.true(f.startswith("/rom/firmware/agent"), f)
    mptest.eq(sys.path[:2], ["/rom", R + "slots/a"])
    mptest.eq(_runlog(), [["1.0.0", "a", "False", "None"]])


def test_corrupted_image_boots_from_the_files():
    _inst("a", "v1")
    rom = _rom()
    romslot.write("a", R)
    n = _ev(0)["n"]
    rom.maps[0][n // 2] ^= 0x01          # one bit of the mapped flash flipped
    info, f = _boot()
    mptest.eq(info.get("rom"), "sha256")
    mptest.true(f.startswith(R + "slots/a/firmware/agent"), f)
    mptest.true("/rom" not in sys.path)
    mptest.eq(_runlog(), [["1.0.0", "a", "False", "None"]])


def test_wrong_digest_or_size_in_the_evidence_boots_from_the_files():
    _inst("a", "v1")
    _rom()
    romslot.write("a", R)
    ev = _ev(0)
    for change, why in (({"sha": "00" * 32}, "sha256"), ({"n": _SIZE + 1}, "size"),
                        ({"n": ev["n"] - 1}, "sha256"), ({"slot": "b"}, "stale")):
        d = dict(ev)
        d.update(change)
        evidence._write_ev(R + "slots/rom0", d)
        info, f = _boot()
        # "stale" (another slot's image) is rebuilt at boot; the fake slot has
        # no writer, so it still boots from its files
        mptest.true(info.get("rom") == why or (why == "stale" and info["rom"].startswith("build")),
                    info.get("rom"), change)
        mptest.true(f.startswith(R + "slots/a/"), f)
    mptest.eq(len(_runlog()), 4)


def test_missing_partition_or_no_rom_at_all_boots_from_the_files():
    _inst("a", "v1")
    h = _Host()
    h.rom_ioctl = lambda op, *a: 0 if op == 1 else -22     # a board whose table has none
    sys.modules["_vboard"] = h
    info, f = _boot()
    mptest.eq(info.get("rom"), "no partition")
    mptest.true(f.startswith(R + "slots/a/"), f)
    sys.modules.pop("_vboard")
    info, f = _boot()
    mptest.eq("rom" in info, False)                         # nothing tried: no rom_ioctl
    mptest.true(f.startswith(R + "slots/a/"), f)
    mptest.eq(len(_runlog()), 2)


def test_evidence_is_bound_to_the_manifest_a_new_install_makes_it_stale():
    _inst("a", "v1")
    _inst("b", "v2")
    _rom()
    mptest.eq(romslot.write("b", R), None)
    mptest.eq(_ev(1)["slot"], "b")
    _inst("b", "v1")                                        # new files in b: same partition, old image
    info, f = _boot("b")
    mptest.true(info["rom"].startswith("build"), info["rom"])
    mptest.true(f.startswith(R + "slots/b/"), f)


def test_one_shared_partition_holds_the_slot_written_last():
    _inst("a", "v1")
    _inst("b", "v2")
    _rom(parts=1)
    mptest.eq(romslot.write("b", R), None)
    mptest.eq(romslot.own_partition("b"), None)            # the updater never writes a shared one
    info, f = _boot("b")
    mptest.eq(info["rom"], True)
    info, f = _boot("a")                                     # a's image is not there
    mptest.true(info["rom"].startswith("build"), info["rom"])
    mptest.true(f.startswith(R + "slots/a/"), f)


def test_power_cut_while_writing_leaves_no_evidence_and_the_files_boot():
    _inst("a", "v1")
    state = {"left": 3}

    def gate(n):
        state["left"] -= 1
        if state["left"] == 0:
            return n // 2, True
        return (0, False) if state["left"] < 0 else (n, False)
    _rom(gate=gate)
    mptest.raises(simflash.PowerCut, romslot.write, "a", R)
    mptest.raises(OSError, os.stat, R + "slots/rom0")
    info, f = _boot()
    mptest.true(info["rom"].startswith("build"), info["rom"])
    mptest.true(f.startswith(R + "slots/a/"), f)


def test_image_too_big_for_the_partition_is_recorded_and_not_retried():
    _inst("a", "v1")
    global _SIZE
    saved, _SIZE = _SIZE, 1024
    try:
        _rom()
    finally:
        _SIZE = saved
    why = romslot.write("a", R)
    mptest.true("partition" in why, why)
    mptest.eq(_ev(0)["fail"], why[:60])
    info, f = _boot()
    mptest.eq(info["rom"], "failed")
    mptest.true(f.startswith(R + "slots/a/"), f)


def test_an_import_that_fails_from_rom_is_retried_from_the_files():
    # a ROM image that checks out but whose agent does not import (bytecode
    # the port rejects, say): the slot's files run instead, nothing persisted
    _inst("a", "noimport")
    rom = _rom()
    mptest.eq(romslot.write("a", R), None)                  # image of the broken agent
    good = bytes(rom.maps[0][:_ev(0)["n"]])
    ev = _ev(0)
    _inst("a", "v1")                                         # files: a good agent
    evidence._write_ev(R + "slots/rom0", dict(ev, man=evidence.manifest_digest("a", R)))
    mptest.eq(bytes(rom.maps[0][:ev["n"]]), good)
    info, f = _boot()
    mptest.eq((info["slot"], info.get("rom")), ("a", True))
    mptest.true(f.startswith(R + "slots/a/"), f)
    mptest.true("/rom" not in sys.path)
    mptest.eq(_runlog(), [["1.0.0", "a", "False", "None"]])
    mptest.eq(boot.read_record(R).reason, None)
