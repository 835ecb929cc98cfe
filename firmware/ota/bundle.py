# Device-side reader/unpacker of firmware bundles (the signed image's payload).
# Format: docs/image-format.md "Bundle and slots" (builder: tools/bundle.py).
# Streams: one caller-provided buffer, deflate window 2**wbits (<= 4 KB),
# nothing allocated in proportion to a size read from the bundle.
import sys
import gc
import os
import json
import struct
import hashlib
from micropython import const

try:
    import deflate
except ImportError:
    deflate = None

MAGIC = b"EVB1"
FLAG_DEFLATE = const(1)
_HDR = const(44)           # u8 flags, u8 path_len, u16 reserved, u32 size, u32 stored, 32 sha
_MAX_META = const(512)
_MAX_PATH = const(100)
_MAX_DEPTH = const(8)
_MAX_FILE = const(4194304)
_MAX_FILES = const(512)
_MIN_BUF = const(512)            # >= _MAX_META and >= _HDR + _MAX_PATH
_DIR = const(0x4000)


_RESERVE = const(3584)    # a 2 KB window (wbits 11) + the decompressor state (3.4 KB measured)
_reserve = [None]
# fn() called after every chunk written by copy() (the updater's `feed`: the
# install is one long step, the agent's watchdog is fed on progress)
_tick = [None]


def on_chunk(fn):
    _tick[0] = fn


def reserve(n=_RESERVE):
    """Hold n bytes as one block while the heap is not yet fragmented (the
    update job calls this when a download starts). copy() lets it go just
    before a deflate stream allocates its window and state, so that they find
    this hole (a fragmented heap often has 80 KB free and no 2 KB block),
    and takes it back after the file. reserve(0) lets go for good."""
    _reserve[0] = None
    if n:
        try:
            _reserve[0] = bytearray(n)
        except MemoryError:
            gc.collect()
            try:
                _reserve[0] = bytearray(n)
            except MemoryError:
                pass


def held():
    return _reserve[0] is not None


def _release():
    # in a frame of its own: no stale copy of the reference may stay on the
    # caller's value stack, where the conservative GC would still see it
    r = _reserve[0]
    _reserve[0] = None
    return len(r) if r is not None else 0


class BundleError(Exception):
    pass


def _safe_char(c):
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "._-"


def check_path(path):
    """Validate an in-bundle path; returns its components or raises BundleError."""
    if not isinstance(path, str) or not path or len(path) > _MAX_PATH:
        raise BundleError("bad path length")
    parts = path.split("/")
    if len(parts) > _MAX_DEPTH:
        raise BundleError("path too deep: " + path)
    for p in parts:
        if p in ("", ".", ".."):
            raise BundleError("bad path: " + path)
        for c in p:
            if not _safe_char(c):
                raise BundleError("bad character in path: " + repr(path))
    if parts[0].startswith("MANIFEST"):
        raise BundleError("reserved name: " + path)
    return parts


class Entry:
    def __init__(self, path, parts, flags, size, stored, sha, offset):
        self.path = path
        self.parts = parts
        self.flags = flags
        self.size = size        # raw size
        self.stored = stored    # bytes in the bundle
        self.sha = sha          # 32-byte SHA-256 of the raw content
        self.offset = offset    # of the data, from the payload start


class Reader:
    """Bundle at the current position of file object f, `size` bytes long."""

    def __init__(self, f, size, buf=None, board=None):
        if buf is None:
            buf = bytearray(512)
        if len(buf) < _MIN_BUF:
            raise ValueError("buffer too small")
        self.f, self.buf, self.mv = f, buf, memoryview(buf)
        self.base = f.tell()
        if not isinstance(size, int) or size < 6:
            raise BundleError("payload too small")
        self.limit = size
        head = self._read(0, 6)
        if bytes(head[:4]) != MAGIC:
            raise BundleError("bad magic")
        n = struct.unpack_from("<H", head, 4)[0]
        if n > _MAX_META or n > size - 6:
            raise BundleError("bad meta length")
        try:
            m = json.loads(bytes(self._read(6, n)))
            version, count, wbits = m["version"], m["files"], m.get("wbits", 0)
            total, mb, mpy = m.get("size", 0), m.get("board"), m.get("mpy")
        except BundleError:
            raise
        except Exception:
            raise BundleError("bad meta")
        if not isinstance(version, str) or not 0 < len(version) <= 32:
            raise BundleError("bad version")
        if not isinstance(count, int) or not 0 < count <= _MAX_FILES:
            raise BundleError("bad file count")
        if not isinstance(wbits, int) or not (wbits == 0 or 9 <= wbits <= 12):
            raise BundleError("bad deflate window")
        if not isinstance(total, int) or total < 0:
            raise BundleError("bad total size")
        if board is not None and mb is not None and mb != board:
            raise BundleError("wrong board: %s" % mb)
        if mpy is not None:
            my = getattr(sys.implementation, "_mpy", None)
            if not isinstance(mpy, list) or len(mpy) != 2 or \
                    (my is not None and (mpy[0] != my & 0xFF or
                                         (mpy[1] and mpy[1] != (my >> 8) & 3))):
                # sub-version only binds native code; bytecode-only .mpy carries 0
                raise BundleError("incompatible .mpy version %r" % (mpy,))
        self.meta = m
        self.version, self.count, self.wbits, self.total = version, count, wbits, total
        self.first = 6 + n

    def _read(self, off, n):
        """n (<= len(buf)) bytes at payload offset off, into the buffer."""
        if off + n > self.limit:
            raise BundleError("truncated bundle")
        self.f.seek(self.base + off)
        mv = self.mv[:n]
        got = 0
        while got < n:
            k = self.f.readinto(mv[got:])
            if not k:
                raise BundleError("truncated bundle")
            got += k
        return mv

    def entries(self):
        """Yield each Entry (headers checked); the caller may copy() it."""
        off, prev, total = self.first, None, 0
        for _ in range(self.count):
            h = self._read(off, _HDR)
            flags, plen, res, size, stored = struct.unpack_from("<BBHII", h, 0)
            sha = bytes(h[12:44])
            if flags not in (0, FLAG_DEFLATE) or res:
                raise BundleError("bad entry flags")
            if not 0 < plen <= _MAX_PATH:
                raise BundleError("bad path length")
            if size > _MAX_FILE:
                raise BundleError("file too large")
            try:
                path = str(bytes(self._read(off + _HDR, plen)), "ascii")
            except UnicodeError:
                raise BundleError("bad path encoding")
            parts = check_path(path)
            if prev is not None and (not prev < parts or parts[:len(prev)] == prev):
                raise BundleError("duplicate, unsorted or conflicting path: " + path)
            data = off + _HDR + plen
            if stored > self.limit - data:
                raise BundleError("entry runs past the payload: " + path)
            if flags == 0 and stored != size:
                raise BundleError("stored size mismatch: " + path)
            if flags == FLAG_DEFLATE and (deflate is None or not self.wbits):
                raise BundleError("deflate not available")
            total += size
            if total > self.total:
                raise BundleError("files exceed the declared size")
            prev = parts
            yield Entry(path, parts, flags, size, stored, sha, data)
            off = data + stored
        if off != self.limit:
            raise BundleError("trailing data after the last entry")
        if total != self.total:
            raise BundleError("declared size mismatch")

    def check(self):
        """Structural pass: every header, path and bound; no content read."""
        n = 0
        for e in self.entries():
            n += 1
        # the payload must really be there (a short file is a truncated bundle)
        self._read(self.limit - 1, 1)
        return n

    def copy(self, e, out):
        """Stream entry e's raw content into out.write(), checking size and SHA-256."""
        h = hashlib.sha256()
        self.f.seek(self.base + e.offset)
        left = e.size
        src = self.f
        n = _release() if e.flags == FLAG_DEFLATE else 0
        if n:
            gc.collect()
        try:
            self._copy(e, out, src, h, left)
        finally:
            if n:
                gc.collect()
                reserve(n)

    def _copy(self, e, out, src, h, left):
        f, mv, buf = self.f, self.mv, self.buf
        if e.flags == FLAG_DEFLATE:
            src = deflate.DeflateIO(f, deflate.RAW, self.wbits)
        while left:
            want = left if left < len(buf) else len(buf)
            chunk = buf if want == len(buf) else mv[:want]
            try:
                n = src.readinto(chunk)
            except (OSError, EOFError, ValueError):
                raise BundleError("corrupt data: " + e.path)
            if not n:
                raise BundleError("short data: " + e.path)
            part = chunk if n == want else mv[:n]
            h.update(part)
            out.write(part)
            left -= n
            t = _tick[0]
            if t is not None:
                t()
        if e.flags == FLAG_DEFLATE:
            try:
                extra = src.readinto(mv[:1])
            except (OSError, EOFError, ValueError):
                raise BundleError("corrupt data: " + e.path)
            if extra:
                raise BundleError("longer than declared: " + e.path)
            if f.tell() != self.base + e.offset + e.stored:
                raise BundleError("stored size mismatch: " + e.path)
        if h.digest() != e.sha:
            raise BundleError("sha256 mismatch: " + e.path)


def _hex(b):
    return "".join("%02x" % x for x in b)


def _mkdirs(dest, parts):
    p = dest
    for name in parts[:-1]:
        p += "/" + name
        try:
            if not os.stat(p)[0] & _DIR:
                raise BundleError("path conflicts with a file: " + p)
        except OSError:
            os.mkdir(p)
    return p + "/" + parts[-1]


def unpack(reader, dest, on_file=None):
    """Write every file of the (already check()ed) bundle under directory dest.
    on_file(entry, sha_hex) is called after each verified file. Returns the
    number of files. A failing file is removed; nothing lands outside dest."""
    n = 0
    for e in reader.entries():
        target = _mkdirs(dest, e.parts)
        try:
            with open(target, "wb") as out:
                reader.copy(e, out)
        except BundleError:
            try:
                os.remove(target)
            except OSError:
                pass
            raise
        if on_file is not None:
            on_file(e, _hex(e.sha))
        n += 1
    return n
