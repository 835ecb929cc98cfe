# MCUboot signed-image verification (the format `imgtool sign` writes with an
# Ed25519 or an ECDSA P-256 key), streaming, for MicroPython. See
# docs/image-format.md.
#
#   info = verify(stream, public_keys, board=None)
#   v = Verifier(public_keys, board=None); v.feed(chunk) ...; info = v.finish()
#
# Every rejection raises ImageError with the reason. Nothing is allocated in
# proportion to a size read from the image: the payload is only hashed, and the
# two TLV areas are collected only up to fixed caps (512 and 1024 bytes).
# (Kept compact on purpose: compiling from source on a 96K heap costs about
# three bytes of heap per byte of source.)
import hashlib
import struct
from micropython import const

from . import ed25519

IMAGE_MAGIC = const(0x96F3B83D)
TLV_INFO_MAGIC = const(0x6907)        # unprotected TLV area
TLV_PROT_INFO_MAGIC = const(0x6908)   # protected TLV area (hashed)
TLV_KEYHASH = const(0x01)
TLV_PUBKEY = const(0x02)
TLV_SHA256 = const(0x10)
TLV_ECDSA = const(0x22)               # ECDSA signature (DER), P-256 keys here
TLV_ED25519 = const(0x24)
TLV_SEC_CNT = const(0x50)
TLV_BOARD = const(0xA0)               # custom protected TLV: UTF-8 board id
PROT_CAP = const(512)                 # largest protected TLV area accepted
UNPROT_CAP = const(1024)              # largest unprotected TLV area accepted
BOARD_MAX = const(64)                 # longest board id
F_PIC = const(0x01)                   # the only header flag accepted

_HDR = const(32)
# header flags refused, by name
_FLAGS = ((0x04, "encrypted (AES-128)"), (0x08, "encrypted (AES-256)"), (0x10, "non-bootable"),
          (0x20, "RAM-load"), (0x100, "ROM-fixed"), (0x200, "compressed (LZMA1)"),
          (0x400, "compressed (LZMA2)"), (0x800, "compressed (ARM Thumb)"))
# expected value length of the TLVs that are used (board: at most BOARD_MAX)
# (PUBKEY: 44 for Ed25519 or 91 for P-256, ECDSA: a DER signature of 8..72)
_LEN = {TLV_SEC_CNT: 4, TLV_KEYHASH: 32, TLV_PUBKEY: 0, TLV_SHA256: 32, TLV_ED25519: 64, TLV_ECDSA: 0}

# DER SubjectPublicKeyInfo of an Ed25519 key = these 12 bytes + the raw key.
SPKI_PREFIX = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00"
# ... and of a P-256 key (id-ecPublicKey, prime256v1) = these 26 bytes + the
# 65-byte uncompressed point.
P256_SPKI_PREFIX = b"\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07\x03\x42\x00"


def spki(key):
    """DER SubjectPublicKeyInfo of a trusted key (32-byte Ed25519 or 65-byte P-256)."""
    return (SPKI_PREFIX if len(key) == 32 else P256_SPKI_PREFIX) + key


def split_keys(data, limit=16):
    """Trusted keys from the bytes of a key file: a concatenation of raw
    32-byte Ed25519 keys and 65-byte uncompressed P-256 points (0x04 | X | Y).
    An entry that starts with 0x04 and whose 65 bytes are a point on P-256 is
    a P-256 key, anything else is read as a 32-byte Ed25519 key. Raises
    ImageError when the bytes do not split exactly into 1..limit keys."""
    keys = []
    i = 0
    n = len(data)
    while i < n:
        if len(keys) == limit:
            raise ImageError("key file holds more than %d keys" % limit)
        if data[i] == 4 and n - i >= 65 and _p256(data[i:i + 65]):
            keys.append(bytes(data[i:i + 65]))
            i += 65
        elif n - i >= 32:
            keys.append(bytes(data[i:i + 32]))
            i += 32
        else:
            raise ImageError("key file: %d stray bytes after %d keys" % (n - i, len(keys)))
    if not keys:
        raise ImageError("key file holds no key")
    return keys


def _p256(k):
    from . import ecdsa_p256
    return ecdsa_p256.public_point(k) is not None


class ImageError(Exception):
    pass


class Header:
    """The fields of the 32-byte image header."""

    def __init__(self, t):
        self.load_addr, self.hdr_size, self.protect_tlv_size, self.img_size, self.flags = t[1:6]
        self.version = t[6:10]


class ImageInfo:
    """What a verified image declares (all of it covered by the signature)."""

    def __init__(self, hdr, tlv, key_index, digest, total_size):
        self.version = hdr.version
        self.header_size = hdr.hdr_size
        self.payload_size = hdr.img_size
        self.flags = hdr.flags
        sec = tlv.get(TLV_SEC_CNT)
        self.security_counter = None if sec is None else struct.unpack("<I", sec)[0]
        self.board = tlv.get(TLV_BOARD)
        self.key_index = key_index
        self.hash = digest
        self.total_size = total_size


def parse_header(buf):
    """Parse and check the first 32 bytes of an image; returns a Header."""
    if len(buf) < _HDR:
        raise ImageError("header too short: %d bytes" % len(buf))
    t = struct.unpack_from("<IIHHIIBBHI", buf, 0)
    if t[0] != IMAGE_MAGIC:
        raise ImageError("bad image magic 0x%08x (not an MCUboot image)" % t[0])
    h = Header(t)
    if h.hdr_size < _HDR:
        raise ImageError("header size %d is smaller than the 32-byte header" % h.hdr_size)
    psz = h.protect_tlv_size
    if psz and (psz < 4 or psz > PROT_CAP):
        raise ImageError("protected TLV area size %d out of range 4..%d" % (psz, PROT_CAP))
    bad = h.flags & ~F_PIC
    if bad:
        names = []
        for bit, name in _FLAGS:
            if bad & bit:
                names.append(name)
                bad &= ~bit
        if bad:
            names.append("unknown flags 0x%x" % bad)
        raise ImageError("unsupported image flags: " + ", ".join(names))
    if h.hdr_size + h.img_size + psz + UNPROT_CAP > 0xFFFFFFFF:
        raise ImageError("image sizes overflow 32 bits (header %d, payload %d)" % (h.hdr_size, h.img_size))
    return h


def _keys(public_keys):
    keys = []
    try:
        if isinstance(public_keys, (bytes, bytearray, str)):
            raise TypeError
        for k in public_keys:
            if not isinstance(k, (bytes, bytearray, memoryview)) or not (
                    len(k) == 32 or (len(k) == 65 and _p256(k))):
                raise ImageError("trusted key #%d is neither a raw 32-byte Ed25519 key nor a "
                                 "65-byte P-256 point" % len(keys))
            keys.append(bytes(k))
    except TypeError:
        raise ImageError("public_keys must be a list of raw keys (32-byte Ed25519, 65-byte P-256)")
    if not keys:
        raise ImageError("no trusted public keys")
    return keys


class Verifier:
    """Incremental verification of an image fed in chunks of any size.
    States: 0 header, 1 payload, 2 protected TLVs, 3 TLV info, 4 TLVs, 5 done."""

    def __init__(self, public_keys, board=None, max_size=None):
        self._keys = _keys(public_keys)
        if board is not None and not isinstance(board, str):
            raise ImageError("board must be a str or None")
        self._want = board
        self._max = max_size
        self.received = 0
        self._sha = hashlib.sha256()
        self._st = 0
        self._seg = _HDR          # where the current state ends
        self._buf = bytearray(_HDR)
        self._n = 0               # bytes collected in _buf
        self._hdr = None
        self._pend = 0            # end of the hashed region
        self._end = 0             # end of the image, 0 until known
        self._digest = None
        self._tlv = {}            # TLV type -> value (the types that are used)
        self._info = None
        self._err = None

    def expected_size(self):
        """Image size as far as known: 32 before the header is in, then an upper
        bound (hashed region + UNPROT_CAP), exact once the TLV info is read."""
        if self._end:
            return self._end
        if self._hdr is None:
            return _HDR
        return self._pend + UNPROT_CAP

    @property
    def done(self):
        return self._info is not None

    def header(self):
        return self._hdr

    def feed(self, buf):
        """Feed the next bytes; raises ImageError as soon as the bytes seen so
        far prove the image bad. After an error the verifier stays failed."""
        if self._err is not None:
            raise self._err
        try:
            self._feed(memoryview(buf))
        except ImageError as e:
            self._err = e
            raise

    def finish(self):
        """The ImageInfo of the complete, verified image; raises ImageError."""
        if self._err is not None:
            raise self._err
        if self._info is None:
            raise ImageError("truncated image: %d bytes, expected %s" % (
                self.received, self._end or ("more than %d" % self.received)))
        return self._info

    def _feed(self, mv):
        n = len(mv)
        if self._st == 1 and self.received + n < self._seg:
            # fast path: a chunk inside the payload is only hashed
            self._sha.update(mv)
            self.received += n
            return
        i = 0
        while i < n:
            st = self._st
            if st == 5:
                raise ImageError("data beyond the end of the image (%d bytes)" % self._end)
            take = min(self._seg - self.received, n - i)
            chunk = mv[i:i + take]
            if st < 3:
                self._sha.update(chunk)
            if st != 1:
                self._buf[self._n:self._n + take] = chunk
                self._n += take
            self.received += take
            i += take
            while self._st < 5 and self.received == self._seg:
                self._next()

    def _collect(self, size, seg):
        self._buf = bytearray(size)
        self._n = 0
        self._seg = seg

    def _next(self):
        st = self._st
        self._st = st + 1
        if st == 0:
            h = self._hdr = parse_header(self._buf)
            self._pend = h.hdr_size + h.img_size + h.protect_tlv_size
            self._fits(self._pend + 4)
            if self._want is not None and not h.protect_tlv_size:
                raise ImageError("image has no board id, board %r required" % self._want)
            self._seg = self._pend - h.protect_tlv_size
        elif st == 1:
            self._collect(self._hdr.protect_tlv_size, self._pend)
        elif st == 2:
            if self._n:
                self._parse(True)
            self._digest = self._sha.digest()
            self._sha = None
            board = self._tlv.get(TLV_BOARD)
            if self._want is not None and board != self._want:
                if board is None:
                    raise ImageError("image has no board id, board %r required" % self._want)
                raise ImageError("image is for board %r, not %r" % (board, self._want))
            self._collect(4, self._pend + 4)
        elif st == 3:
            magic, total = struct.unpack_from("<HH", self._buf, 0)
            if magic == TLV_PROT_INFO_MAGIC:
                raise ImageError("protected TLV area not declared in the header")
            if magic != TLV_INFO_MAGIC:
                raise ImageError("bad TLV area magic 0x%04x" % magic)
            if total < 4 or total > UNPROT_CAP:
                raise ImageError("TLV area length %d out of range 4..%d" % (total, UNPROT_CAP))
            self._end = self._pend + total
            self._fits(self._end)
            info = self._buf
            self._collect(total, self._end)
            self._buf[0:4] = info
            self._n = 4
        else:
            self._parse(False)
            self._check()

    def _fits(self, size):
        if self._max is not None and size > self._max:
            raise ImageError("image of %d+ bytes does not fit in %d bytes" % (size, self._max))

    def _parse(self, prot):
        buf = self._buf
        size = len(buf)
        area = "protected" if prot else "unprotected"
        magic, total = struct.unpack_from("<HH", buf, 0)
        if prot and (magic != TLV_PROT_INFO_MAGIC or total != size):
            raise ImageError("bad protected TLV area (magic 0x%04x, length %d, header says %d)"
                             % (magic, total, size))
        off = 4
        while off < size:
            if size - off < 4:
                raise ImageError("%d stray bytes at the end of the %s TLV area" % (size - off, area))
            t, n = struct.unpack_from("<HH", buf, off)
            off += 4
            if n > size - off:
                raise ImageError("TLV 0x%02x length %d runs past the end of the %s TLV area"
                                 % (t, n, area))
            v = bytes(buf[off:off + n])
            off += n
            self._one(t, v, prot)

    def _one(self, t, v, prot):
        if t in (0x11, 0x12):
            raise ImageError("SHA%s image hash not supported (sign with --sha 256)"
                             % ("384" if t == 0x11 else "512"))
        if 0x20 <= t <= 0x25 and t != TLV_ED25519 and t != TLV_ECDSA:
            raise ImageError("signature TLV 0x%02x not supported (Ed25519 or ECDSA P-256 over "
                             "SHA-256 only)" % t)
        if 0x30 <= t <= 0x34:
            raise ImageError("encrypted images are not supported")
        if t in (TLV_SEC_CNT, TLV_BOARD):
            if not prot:
                raise ImageError("TLV 0x%02x outside the protected area" % t)
            if t == TLV_BOARD:
                if len(v) > BOARD_MAX:
                    raise ImageError("board id longer than %d bytes" % BOARD_MAX)
                try:
                    v = v.decode()
                except ValueError:   # UnicodeError
                    raise ImageError("board id is not UTF-8")
        elif t in _LEN:
            if prot:
                raise ImageError("TLV 0x%02x not allowed in the protected area" % t)
            if t == TLV_SHA256 and v != self._digest and len(v) == 32:
                raise ImageError("image hash mismatch (payload, header or protected TLVs altered)")
        else:
            return  # other TLVs: hashed (when protected), not used
        want = _LEN.get(t, len(v))
        if t == TLV_PUBKEY:
            want = 91 if len(v) == 91 else 44
        elif t == TLV_ECDSA:
            want = len(v) if 8 <= len(v) <= 72 else 72
        if len(v) != want:
            raise ImageError("TLV 0x%02x length %d, expected %d" % (t, len(v), want))
        if t in self._tlv or (t == TLV_KEYHASH and TLV_PUBKEY in self._tlv) or (
                t == TLV_PUBKEY and TLV_KEYHASH in self._tlv) or (
                t == TLV_ECDSA and TLV_ED25519 in self._tlv) or (
                t == TLV_ED25519 and TLV_ECDSA in self._tlv):
            raise ImageError("duplicate TLV 0x%02x" % t)
        self._tlv[t] = v

    def _check(self):
        tlv = self._tlv
        if TLV_SHA256 not in tlv:
            raise ImageError("no SHA256 TLV in the image")
        sig = tlv.get(TLV_ED25519)
        klen = 32
        if sig is None:
            sig = tlv.get(TLV_ECDSA)
            klen = 65
        if sig is None:
            raise ImageError("image is not signed (no ED25519 or ECDSA TLV)")
        kh = tlv.get(TLV_KEYHASH)
        pk = tlv.get(TLV_PUBKEY)
        if kh is None and pk is None:
            raise ImageError("no KEYHASH or PUBKEY TLV: cannot tell the signing key")
        if pk is not None and pk[:-klen] != (SPKI_PREFIX if klen == 32 else P256_SPKI_PREFIX):
            raise ImageError("PUBKEY TLV is not the DER public key of the signature's type (%s)"
                             % ("Ed25519" if klen == 32 else "P-256"))
        idx = -1
        for i, k in enumerate(self._keys):
            if len(k) == klen and ((pk is not None and pk[-klen:] == k) or (
                    kh is not None and hashlib.sha256(spki(k)).digest() == kh)):
                idx = i
                break
        if idx < 0:
            raise ImageError("image signed by an untrusted key")
        try:
            ok = self._check_sig(klen, idx, sig)
        except MemoryError:
            # out of heap is not a bad signature: collect and try once more;
            # a second MemoryError reaches the caller as what it is
            import gc
            gc.collect()
            ok = self._check_sig(klen, idx, sig)
        if not ok:
            raise ImageError("bad signature")
        self._buf = None
        self._info = ImageInfo(self._hdr, tlv, idx, self._digest, self._end)

    def _check_sig(self, klen, idx, sig):
        if klen == 32:
            return ed25519.verify(self._keys[idx], self._digest, sig)
        # imgtool signs the image hash as the ECDSA digest (SHA-256 prehashed)
        from . import ecdsa_p256
        if ecdsa_p256.parse_sig(sig) is None:
            raise ImageError("ECDSA signature TLV is not one strict DER ECDSA-Sig-Value "
                             "(padded by imgtool --pad-sig?)")
        return ecdsa_p256.verify_digest(self._keys[idx], self._digest, sig)


def verify(stream, public_keys, board=None, max_size=None, chunk=512):
    """Verify the image read from `stream` (binary, at offset 0) to its end.
    Returns an ImageInfo, raises ImageError."""
    v = Verifier(public_keys, board, max_size)
    buf = bytearray(chunk)
    mv = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(buf)
        else:
            data = stream.read(chunk)
            n = len(data) if data else 0
            buf[:n] = data
        if not n:
            break
        v.feed(mv[:n])
    return v.finish()
