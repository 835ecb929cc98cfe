# Simulated flash for the unix port: block devices for vfs.VfsLfs2 with power
# cuts injected at a chosen block write or erase (as MCUboot's simulator does).
#
# FileBlockDevice keeps the flash in a host file (seek/read/write), so a big
# flash costs no heap. RamBlockDevice keeps it in a bytearray.
# Both implement the extended block protocol: readblocks(n, buf, off),
# writeblocks(n, buf, off), ioctl(4 count, 5 size, 6 erase).
#
# cut_after(n, torn=0): the n-th next program/erase operation raises PowerCut
# BEFORE it is applied; with torn=k > 0 the first k bytes of that operation
# are applied first (a torn program: LittleFS programs whole prog-size units,
# so k should be a multiple of the prog size (32) to stay within its model;
# any k works for the simulation). After the cut the device is dead: further
# writes/erases are dropped without error (power is off: nothing reaches the
# flash, and LittleFS file finalisers of the abandoned mount run quietly);
# reads still work until close(), then return erased bytes. A new device
# object on the same file is the board powered up again.
import vfs

_ERASED = 0xFF
# erased bytes, written in chunks: a real flash erases without a RAM buffer,
# so the simulation must not need a block-sized contiguous one either (on a
# fragmented 32-bit heap a 4 KB block is often not there)
_FF = bytes([_ERASED]) * 256


class PowerCut(Exception):
    pass


class _Base:
    def __init__(self, block_size, block_count):
        self.block_size = block_size
        self.block_count = block_count
        self.writes = 0       # program + erase operations applied so far
        self._cut = 0         # 0 = no cut armed, else operations left
        self._torn = 0
        self.dead = False

    def cut_after(self, n, torn=0):
        """Make the n-th next write or erase (n >= 1) raise PowerCut."""
        if n < 1:
            raise ValueError("n >= 1")
        self._cut, self._torn = n, torn

    def _gate(self, block, buf, off, n=None):
        """True when the operation may be applied; False = dead device.
        buf None: an erase of n bytes."""
        if self.dead:
            return False
        n = len(buf) if n is None else n
        if not 0 <= block < self.block_count or off + n > self.block_size:
            raise OSError(22)
        if self._cut:
            self._cut -= 1
            if self._cut == 0:
                self.dead = True
                if self._torn:
                    k = min(self._torn, n)
                    if buf is None:
                        self._fill(block, off, k)
                    else:
                        self._put(block, off, memoryview(buf)[:k])
                raise PowerCut("power cut at write %d" % (self.writes + 1))
        self.writes += 1
        return True

    def readblocks(self, block, buf, off=0):
        if not 0 <= block < self.block_count or off + len(buf) > self.block_size:
            raise OSError(22)
        if not self._get(block, off, buf):
            for i in range(len(buf)):
                buf[i] = _ERASED

    def writeblocks(self, block, buf, off=None):
        off = off or 0
        if self._gate(block, buf, off):
            self._put(block, off, buf)

    def erase(self, block):
        if self._gate(block, None, 0, self.block_size):
            self._fill(block, 0, self.block_size)
        return 0

    def _fill(self, block, off, n):
        end = off + n
        while off < end:
            k = min(len(_FF), end - off)
            self._put(block, off, _FF if k == len(_FF) else memoryview(_FF)[:k])
            off += k

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:
            return self.erase(arg)
        return 0


class RamBlockDevice(_Base):
    def __init__(self, block_size=512, block_count=128, data=None):
        _Base.__init__(self, block_size, block_count)
        self.data = data if data is not None else bytearray([_ERASED]) * (block_size * block_count)

    def _get(self, block, off, buf):
        a = block * self.block_size + off
        buf[:] = self.data[a:a + len(buf)]
        return True

    def _put(self, block, off, buf):
        a = block * self.block_size + off
        self.data[a:a + len(buf)] = buf


class FileBlockDevice(_Base):
    """Flash backed by the host file `path`. create=True makes (or resets) the
    file as erased flash of block_count blocks; else block_count defaults to
    the file's size / block_size."""

    def __init__(self, path, block_size=4096, block_count=None, create=False):
        if create:
            if not block_count:
                raise ValueError("block_count needed to create")
            with open(path, "wb") as f:
                total = block_count * block_size
                for _ in range(total // len(_FF)):
                    f.write(_FF)
                f.write(memoryview(_FF)[:total % len(_FF)])
        self.f = open(path, "r+b")
        if not block_count:
            self.f.seek(0, 2)
            block_count = self.f.tell() // block_size
        _Base.__init__(self, block_size, block_count)

    def _get(self, block, off, buf):
        if self.f is None:
            return False
        self.f.seek(block * self.block_size + off)
        return self.f.readinto(buf) == len(buf)

    def _put(self, block, off, buf):
        self.f.seek(block * self.block_size + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 3 and self.f is not None:        # sync
            self.f.flush()
        return _Base.ioctl(self, op, arg)

    def close(self):
        """Power off for good: the host file is closed; later I/O on this
        object (finalisers of an abandoned mount) touches nothing."""
        if self.f is not None:
            self.f.close()
            self.f = None
        self.dead = True


def mkfs(dev):
    vfs.VfsLfs2.mkfs(dev)


def mount(dev, mountpoint="/flash", readsize=32, progsize=32, lookahead=32, mtime=True):
    """Mount dev (LittleFS v2) at mountpoint; returns the VfsLfs2 object.
    mtime=False makes the flash contents independent of the wall clock
    (power-cut campaigns need the same block writes on every run)."""
    fs = vfs.VfsLfs2(dev, readsize=readsize, progsize=progsize, lookahead=lookahead, mtime=mtime)
    vfs.mount(fs, mountpoint)
    return fs


def umount(mountpoint="/flash"):
    try:
        vfs.umount(mountpoint)
    except OSError:
        pass


def copy_file(src, dst, buf=None):
    """Host file copy (used to snapshot and restore flash images)."""
    buf = buf or bytearray(1024)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while True:
            n = fi.readinto(buf)
            if not n:
                break
            fo.write(buf if n == len(buf) else memoryview(buf)[:n])


def rmtree(p):
    """Remove directory p and everything below it (no os.walk on MicroPython)."""
    import os
    for ent in list(os.ilistdir(p)):
        q = p + "/" + ent[0]
        if ent[1] == 0x4000:
            rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)


def tmpdir(prefix="evsim"):
    """A fresh directory on the host filesystem (unix port) for a test."""
    import os
    base = os.getenv("TMPDIR") or "/tmp"
    p = "%s/%s-%s" % (base.rstrip("/"), prefix, "".join("%02x" % b for b in os.urandom(6)))
    os.mkdir(p)
    return p
