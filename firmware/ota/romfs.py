# Packs a directory tree into a ROMFS image, MicroPython's read-only
# filesystem format (vfs.VfsRom: bytecode runs in place from memory-mapped
# flash), streamed so that the board never holds the image in RAM:
#
#   n = romfs.size_of("/slots/b")                 # bytes of the image
#   digest = romfs.write_image("/slots/b", part)  # part.write(b) in <= 512-byte
#                                                 # pieces; returns its SHA-256
#
# The bytes are those of `mpremote romfs build --no-mpy` for the same tree
# (tests/test_romfs_writer.py compares them): entries sorted by name, each a
# record <kind varuint><length varuint><payload>, the image
# b"\xd2\xcd\x31" <length> <records>, its length padded (0x80 prefix) so that
# the header part is even. keep(path) -> bool, when given, selects the files
# (directories are always written, so size_of and write_image agree).
# Names must be ASCII (as mpremote requires). A file that changes size between
# the two passes raises OSError: the caller's image is then incomplete and
# its digest does not match, so it is not used.
import os
from micropython import const

_S_IFDIR = const(0x4000)
_HEADER = b"\xd2\xcd\x31"
_K_VERBATIM = const(2)
_K_DIR = const(4)
_K_FILE = const(5)
_CHUNK = const(512)


def _ulen(v):
    n = 1
    v >>= 7
    while v:
        n += 1
        v >>= 7
    return n


def _uint(v):
    n = _ulen(v)
    b = bytearray(n)
    i = n - 1
    b[i] = v & 0x7F
    v >>= 7
    while v:
        i -= 1
        b[i] = 0x80 | (v & 0x7F)
        v >>= 7
    return b


def _name(n):
    for c in n:
        if ord(c) > 127:
            raise ValueError("ROMFS names are ASCII: %r" % n)
    return n.encode()


def _list(d, keep):
    # [(name, path, is_dir, size)] sorted by name
    out = []
    for n in sorted(os.listdir(d)):
        p = d + "/" + n
        st = os.stat(p)
        if st[0] & _S_IFDIR:
            out.append((n, p, True, 0))
        elif keep is None or keep(p):
            out.append((n, p, False, st[6]))
    return out


def _file_payload(nlen, size):
    return _ulen(nlen) + nlen + _ulen(_K_VERBATIM) + _ulen(size) + size


def _content(d, keep):
    # bytes of the records of d's entries
    t = 0
    for n, p, is_dir, size in _list(d, keep):
        nlen = len(_name(n))
        if is_dir:
            pl = _ulen(nlen) + nlen + _content(p, keep)
            t += _ulen(_K_DIR) + _ulen(pl) + pl
        else:
            pl = _file_payload(nlen, size)
            t += _ulen(_K_FILE) + _ulen(pl) + pl
    return t


def _prefix(n):
    # the length field after the header: padded so the header part is even
    e = _uint(n)
    if (len(_HEADER) + len(e) + n) % 2:
        e = b"\x80" + e
    return e


def size_of(src_dir, keep=None):
    """Size in bytes of the ROMFS image of the tree at src_dir."""
    src_dir = src_dir.rstrip("/") or "/"
    n = _content(src_dir, keep)
    return len(_HEADER) + len(_prefix(n)) + n


class _Out:
    def __init__(self, out):
        import hashlib
        self.out = out
        self.h = hashlib.sha256()
        self.n = 0

    def put(self, b):
        self.out.write(b)
        self.h.update(b)
        self.n += len(b)


def _emit(o, d, keep, buf):
    mv = memoryview(buf)
    for n, p, is_dir, size in _list(d, keep):
        nb = _name(n)
        if is_dir:
            pl = _ulen(len(nb)) + len(nb) + _content(p, keep)
            o.put(_uint(_K_DIR))
            o.put(_uint(pl))
            o.put(_uint(len(nb)))
            o.put(nb)
            _emit(o, p, keep, buf)
            continue
        pl = _file_payload(len(nb), size)
        o.put(_uint(_K_FILE))
        o.put(_uint(pl))
        o.put(_uint(len(nb)))
        o.put(nb)
        o.put(_uint(_K_VERBATIM))
        o.put(_uint(size))
        left = size
        with open(p, "rb") as f:
            while left:
                k = f.readinto(mv[:_CHUNK if left > _CHUNK else left])
                if not k:
                    raise OSError("%s shrank while packing" % p)
                o.put(mv[:k])
                left -= k
            if f.readinto(mv[:1]):
                raise OSError("%s grew while packing" % p)


def write_image(src_dir, out, keep=None):
    """Stream the ROMFS image of src_dir to out.write(); returns its SHA-256
    digest (32 bytes). Raises OSError/ValueError (partial output)."""
    src_dir = src_dir.rstrip("/") or "/"
    o = _Out(out)
    o.put(_HEADER)
    o.put(_prefix(_content(src_dir, keep)))
    _emit(o, src_dir, keep, bytearray(_CHUNK))
    return o.h.digest()
