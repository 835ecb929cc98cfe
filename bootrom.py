# ROMFS of the selected slot (bootstrap side, beside boot.py, never replaced
# by OTA). boot.main() imports it after select() and drops it again before the
# agent is imported (docs/memory.md "ROMFS slots").
#
# A slot's files in LittleFS (/slots/<x>) stay the source of truth. A ROM
# partition may hold a ROMFS image of them (bytecode executed in place from
# memory-mapped flash: vfs.VfsRom); when the image checks out it is mounted at
# /rom and put before the slot directory on sys.path. Anything doubtful (no
# partition, no or stale evidence, a size or SHA-256 mismatch over the mapped
# bytes, a mount error) boots from the files as before: a bad ROM image only
# costs heap, never a boot.
#
# Partitions: vfs.rom_ioctl (MicroPython 1.25+; 1 = count, 2 = map, 3 = prepare
# (erase), 4 = write, 5 = complete), or on a virtual board the emulation its
# ROM registers (sys.modules['_vboard'].rom_ioctl, same calls). With two or
# more partitions slot a uses 0 and slot b uses 1; with one, both share it and
# it holds the image of the slot booted last (rebuilt here when that changes).
#
# Evidence /slots/rom<i> (framed like bootev's: b'EVS1' | u16 | JSON | CRC-32):
#   {"slot": x, "n": image bytes, "sha": SHA-256 hex, "man": SHA-256 of the
#    slot's MANIFEST} written after the image was read back and checked, or
#   {"slot": x, "fail": why, "man": ...} after a failed write (not retried for
#    that MANIFEST). Written by firmware/ota/romslot.py (slot code).
import sys
import hashlib
from bootev import _read_ev, _manifest_digest

MOUNT = "/rom"
_HEAD = b"\xd2\xcd\x31"


def ioctl():
    h = sys.modules.get("_vboard")
    f = getattr(h, "rom_ioctl", None)
    if f is None:
        try:
            import vfs
            f = getattr(vfs, "rom_ioctl", None)
        except ImportError:
            f = None
    return f


def index(slot, io):
    # the partition of `slot`, or None when the board has none
    try:
        n = io(1)
    except Exception:
        return None
    if not isinstance(n, int) or n < 1:
        return None
    i = 0 if slot == "a" or n == 1 else 1
    return i


def mapped(io, i):
    # the partition's bytes (memoryview), or None
    try:
        d = io(2, i)
        if isinstance(d, int):
            return None
        return d if isinstance(d, memoryview) else memoryview(d)
    except Exception:
        return None


def ev_path(root, i):
    return root + "slots/rom%d" % i


def check(slot, root, i, mv):
    # None when partition i holds the image the evidence records for `slot`
    # bound to its current MANIFEST; else why not ("none", "stale", ...)
    ev = _read_ev(ev_path(root, i))
    if ev is None:
        return "none"
    if ev.get("slot") != slot or ev.get("man") != _manifest_digest(slot, root):
        return "stale"
    if "fail" in ev:
        return "failed"
    n = ev.get("n")
    if not isinstance(n, int) or not 0 < n <= len(mv) or not isinstance(ev.get("sha"), str):
        return "size"
    if bytes(mv[:3]) != _HEAD:
        return "header"
    h = hashlib.sha256(mv[:n]).digest()
    if "".join("%02x" % b for b in h) != ev["sha"]:
        return "sha256"
    return None


def umount():
    import vfs
    try:
        vfs.umount(MOUNT)
    except OSError:
        pass
    for p in (MOUNT, MOUNT + "/lib"):
        while p in sys.path:
            sys.path.remove(p)


def _build(slot, root, path):
    # write the slot's image with the slot's own writer (its code is verified
    # by select()); whatever happens, the slot's modules are dropped again
    sys.path.insert(0, path)
    try:
        from firmware.ota import romslot
        return romslot.write(slot, root)
    except Exception as e:  # noqa: a failed build costs heap, never the boot
        return "build: %r" % (e,)
    finally:
        boot = sys.modules["boot"]
        boot._purge(path)
        import gc
        gc.collect()


def mount(slot, root, path, build=True):
    # (True, None) when the slot's ROM image is mounted at /rom (on sys.path
    # before `path`, which the caller inserts), else (False, why). Never raises.
    try:
        umount()
        io = ioctl()
        i = index(slot, io) if io is not None else None
        if i is None:
            return False, "no partition"
        mv = mapped(io, i)
        why = check(slot, root, i, mv) if mv is not None else "no map"
        if why in ("none", "stale") and build:
            mv = None
            err = _build(slot, root, path)
            if err:
                return False, err
            mv = mapped(io, i)
            why = check(slot, root, i, mv) if mv is not None else "no map"
        if why:
            return False, why
        import vfs
        vfs.mount(vfs.VfsRom(mv), MOUNT)
        return True, None
    except Exception as e:  # noqa
        try:
            umount()
        except Exception:
            pass
        return False, "mount: %r" % (e,)


def boot(slot, root, path, info):
    # boot.main()'s hook: mount, note the outcome in info and on the console
    ok, why = mount(slot, root, path)
    info["rom"] = True if ok else why
    print("boot: slot %s code from %s" % (slot, "ROM" if ok else "files (%s)" % why))
    return ok
