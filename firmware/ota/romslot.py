# Writes a slot's ROMFS image into its ROM partition (docs/memory.md "ROMFS
# slots"): the image of the slot's code files, .mpy/.py (firmware/ota/romfs.py, as
# `mpremote romfs build --no-mpy`), streamed into the partition through
# vfs.rom_ioctl (or a virtual board's emulation, ioctl()), read back
# through the mapping and checked against the digest the writer computed,
# then the evidence /slots/rom<i> that bootrom.py checks at boot.
#
# Called by the updater after install + verify of the inactive slot (the
# charger is idle then) and by bootrom.py at boot when the selected slot's
# image is missing or stale (first boot after a deploy; one shared partition).
# Never fatal: a failure records {"fail": why} and the slot boots from files.
import sys
import os
import hashlib
import boot
from firmware.ota import evidence, romfs

_PIECE = 512


# The partition rules are bootrom.py's (bootstrap side, source: the agent never
# compiles it while it runs), repeated here in slot code; keep the two alike.
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
    # the partition of `slot` (a: 0, b: 1; both 0 when there is one), or None
    try:
        n = io(1)
    except Exception:
        return None
    if not isinstance(n, int) or n < 1:
        return None
    return 0 if slot == "a" or n == 1 else 1


def mapped(io, i):
    try:
        d = io(2, i)
        if isinstance(d, int):
            return None
        return d if isinstance(d, memoryview) else memoryview(d)
    except Exception:
        return None


def ev_path(root, i):
    return root + "slots/rom%d" % i


def own_partition(slot):
    # the ROM partition io of `slot` when it is not the running slot's (the
    # updater writes only then: one shared partition is rebuilt at boot)
    io = ioctl()
    if io is None:
        return None
    i = index(slot, io)
    return io if i is not None and i != index(boot.other(slot), io) else None


class _Out:
    # out.write(bytes) -> the partition, in writes of the partition's minimum
    # write size (the last one padded with zeros, as mpremote does)
    def __init__(self, io, i, n, mv):
        self.io, self.i, self.off = io, i, 0
        self.dev = None
        d = io(2, i)
        if not isinstance(d, memoryview) and hasattr(d, "writeblocks"):
            # a block device object (ESP32 Partition, RP2 Flash): erase blocks
            self.dev = d
            self.bs = d.ioctl(5, 0)
            for b in range((n + self.bs - 1) // self.bs):
                d.ioctl(6, b)
            mw = 4
        else:
            mw = io(3, i, n)
            if not isinstance(mw, int) or mw < 0:
                raise OSError("prepare: %r" % (mw,))
        mw = mw if mw > 0 else 4
        self.buf = bytearray(max(_PIECE, (_PIECE + mw - 1) // mw * mw))
        self.mw = mw
        self.k = 0

    def write(self, data):
        buf, k, n = self.buf, self.k, len(data)
        j = 0
        while j < n:
            c = min(len(buf) - k, n - j)
            buf[k:k + c] = data[j:j + c]
            k += c
            j += c
            if k == len(buf):
                self._flush(buf)
                k = 0
        self.k = k
        return n

    def _flush(self, data):
        if self.dev is not None:
            self.dev.writeblocks(self.off // self.bs, data, self.off % self.bs)
        else:
            r = self.io(4, self.i, self.off, data)
            if isinstance(r, int) and r < 0:
                raise OSError("write at %d: %d" % (self.off, r))
        self.off += len(data)

    def close(self):
        k = self.k
        if k:
            pad = (k + self.mw - 1) // self.mw * self.mw
            for j in range(k, pad):
                self.buf[j] = 0
            self._flush(memoryview(self.buf)[:pad])
            self.k = 0
        if self.dev is None:
            self.io(5, self.i)


def _code(p):
    # what goes into the image: the slot's code; data files (and the MANIFEST)
    # stay in LittleFS, where the slot's modules open them
    return p.endswith(".mpy") or p.endswith(".py")


def _hex(b):
    return "".join("%02x" % x for x in b)


def write(slot, root="/", io=None):
    # None when the image of `slot` is in its partition and recorded; else why not
    root = boot._root(root)
    io = io or ioctl()
    i = index(slot, io) if io is not None else None
    if i is None:
        return "no partition"
    path = ev_path(root, i)
    man = evidence.manifest_digest(slot, root)
    if man is None:
        return "no manifest"
    try:
        os.remove(path)       # first: a cut from here on leaves no evidence (files boot)
    except OSError:
        pass
    src = root + "slots/" + slot
    try:
        n = romfs.size_of(src, _code)
        mv = mapped(io, i)
        if mv is None:
            raise OSError("partition %d not mapped" % i)
        if n > len(mv):
            raise OSError("image %d bytes, partition %d" % (n, len(mv)))
        out = _Out(io, i, n, mv)
        digest = romfs.write_image(src, out, _code)
        out.close()
        mv = mapped(io, i)       # read back through the mapping: flash can lie
        if hashlib.sha256(mv[:n]).digest() != digest:
            raise OSError("read back: digest mismatch")
    except (OSError, ValueError) as e:   # recorded, the slot boots from its files
        # (anything else, MemoryError or a simulated power cut, goes to the
        # caller with no evidence written: retried at the next boot)
        why = ("%r" % (e,))[:60]
        try:
            evidence._write_ev(path, {"slot": slot, "fail": why, "man": man})
        except OSError:
            pass
        return why
    evidence._write_ev(path, {"slot": slot, "n": n, "sha": _hex(digest), "man": man})
    return None
