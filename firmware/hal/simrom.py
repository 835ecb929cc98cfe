# Simulated ROM partitions for the unix port, which has no vfs.rom_ioctl:
# the same calls as MicroPython's (1 count, 2 map -> memoryview, 3 prepare =
# erase, 4 write, 5 complete, 6 erase block size), partition contents in host
# files (rom0.img, rom1.img beside a virtual board's flash.img).
#
# "Mapped" is a bytearray per partition that holds the file's bytes, allocated
# when the partitions are opened (a virtual board's ROM does that before
# boot.py runs): on a board it is memory-mapped flash, not heap, so whoever
# reports heap figures subtracts heap_cost() (docs/memory.md, docs/vboard.md).
# Writes go to the file and to the mapping, as to flash behind its mapping.
#
# Power cuts: gate(n) is called before every prepare/write of n bytes and
# returns (bytes that reach the flash, cut): normally (n, False); (k, True)
# when the power goes during it (k torn bytes are applied, then PowerCut);
# (0, False) once the power is off (dropped quietly). A virtual board passes
# flash_gate(its simflash device): one power rail, one cut counter.
from firmware.hal.simflash import PowerCut

_ERASED = 0xFF
_FF = b"\xff" * 256
_BLOCK = 4096
_MIN_WRITE = 4


def flash_gate(dev):
    # the gate of a ROM partition on the same power rail as simflash device
    # dev: its writes and its armed cut (cut_after) count for both
    def gate(n):
        if dev.dead:
            return 0, False
        if dev._cut:
            dev._cut -= 1
            if dev._cut == 0:
                dev.dead = True
                return min(dev._torn, n), True
        dev.writes += 1
        return n, False
    return gate


def _erase(mv):
    i, n = 0, len(mv)
    while i < n:
        k = min(256, n - i)
        mv[i:i + k] = _FF if k == 256 else _FF[:k]
        i += k


class SimRom:
    def __init__(self, paths, size, gate=None, create=False):
        self.size = size
        self.paths = list(paths)
        self.gate = gate
        self.maps = []
        self.writes = 0
        for p in self.paths:
            buf = bytearray(size)
            mv = memoryview(buf)
            n = 0
            try:
                with open(p, "rb") as f:
                    n = f.readinto(buf) or 0
            except OSError:
                if not create:
                    raise
            if n < size:
                _erase(mv[n:])
                if create or n:
                    with open(p, "r+b" if n else "wb") as f:
                        f.seek(n)
                        f.write(mv[n:])
            self.maps.append(mv)
        # opened now: a virtual board replaces '/' with its flash afterwards
        self._files = [open(p, "r+b") for p in self.paths]

    def heap_cost(self):
        # bytes of heap the mappings take (flash on a board)
        return self.size * len(self.maps)

    def _file(self, i):
        f = self._files[i]
        if f is None:
            raise OSError(19)     # closed: powered off
        return f

    def _apply(self, i, off, data, n):
        # the first n bytes of data (None: erased bytes) at off, file then mapping
        mv = self.maps[i]
        f = self._file(i)
        f.seek(off)
        if data is None:
            _erase(mv[off:off + n])
            f.write(mv[off:off + n])
        else:
            mv[off:off + n] = data[:n]
            f.write(mv[off:off + n])
        f.flush()

    def _op(self, i, off, data, n):
        k, cut = (n, False) if self.gate is None else self.gate(n)
        if k > 0:
            self._apply(i, off, data, k)
        if cut:
            raise PowerCut("power cut in a ROM partition write")
        if k == n:
            self.writes += 1

    def ioctl(self, op, *args):
        if op == 1:
            return len(self.maps)
        if not args or not isinstance(args[0], int) or not 0 <= args[0] < len(self.maps):
            return -22
        i = args[0]
        if op == 2:
            return self.maps[i]
        if op == 3:
            off, n = (0, args[1]) if len(args) == 2 else (args[1], args[2])
            if off % _BLOCK or not 0 <= off <= off + n <= self.size:
                return -22
            end = min(self.size, (off + n + _BLOCK - 1) // _BLOCK * _BLOCK)
            while off < end:
                self._op(i, off, None, _BLOCK)
                off += _BLOCK
            return _MIN_WRITE
        if op == 4:
            off, buf = args[1], args[2]
            n = len(buf)
            if off % _MIN_WRITE or n % _MIN_WRITE or not 0 <= off <= off + n <= self.size:
                return -22
            self._op(i, off, memoryview(buf), n)
            return 0
        if op == 5:
            return 0
        if op == 6:
            return _BLOCK
        return -22

    def close(self):
        for f in self._files:
            if f is not None:
                f.close()
        self._files = [None] * len(self.paths)
