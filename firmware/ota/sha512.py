# Streaming SHA-512 (FIPS 180-4) for MicroPython, whose hashlib has none.
#
# 64-bit words are kept as two 32-bit halves so that every value stays a
# small int on 64-bit ports (no heap allocation per operation); measured on
# the unix port this is about twice as fast as masking Python big ints.
#   h = sha512(b"abc"); h.update(more); h.digest() -> 64 bytes
import struct
from micropython import const

_M = const(0xFFFFFFFF)

# Round constants, (high, low) 32-bit halves of K[0..79].
_K = (
    0x428a2f98, 0xd728ae22, 0x71374491, 0x23ef65cd, 0xb5c0fbcf, 0xec4d3b2f, 0xe9b5dba5, 0x8189dbbc,
    0x3956c25b, 0xf348b538, 0x59f111f1, 0xb605d019, 0x923f82a4, 0xaf194f9b, 0xab1c5ed5, 0xda6d8118,
    0xd807aa98, 0xa3030242, 0x12835b01, 0x45706fbe, 0x243185be, 0x4ee4b28c, 0x550c7dc3, 0xd5ffb4e2,
    0x72be5d74, 0xf27b896f, 0x80deb1fe, 0x3b1696b1, 0x9bdc06a7, 0x25c71235, 0xc19bf174, 0xcf692694,
    0xe49b69c1, 0x9ef14ad2, 0xefbe4786, 0x384f25e3, 0x0fc19dc6, 0x8b8cd5b5, 0x240ca1cc, 0x77ac9c65,
    0x2de92c6f, 0x592b0275, 0x4a7484aa, 0x6ea6e483, 0x5cb0a9dc, 0xbd41fbd4, 0x76f988da, 0x831153b5,
    0x983e5152, 0xee66dfab, 0xa831c66d, 0x2db43210, 0xb00327c8, 0x98fb213f, 0xbf597fc7, 0xbeef0ee4,
    0xc6e00bf3, 0x3da88fc2, 0xd5a79147, 0x930aa725, 0x06ca6351, 0xe003826f, 0x14292967, 0x0a0e6e70,
    0x27b70a85, 0x46d22ffc, 0x2e1b2138, 0x5c26c926, 0x4d2c6dfc, 0x5ac42aed, 0x53380d13, 0x9d95b3df,
    0x650a7354, 0x8baf63de, 0x766a0abb, 0x3c77b2a8, 0x81c2c92e, 0x47edaee6, 0x92722c85, 0x1482353b,
    0xa2bfe8a1, 0x4cf10364, 0xa81a664b, 0xbc423001, 0xc24b8b70, 0xd0f89791, 0xc76c51a3, 0x0654be30,
    0xd192e819, 0xd6ef5218, 0xd6990624, 0x5565a910, 0xf40e3585, 0x5771202a, 0x106aa070, 0x32bbd1b8,
    0x19a4c116, 0xb8d2d0c8, 0x1e376c08, 0x5141ab53, 0x2748774c, 0xdf8eeb99, 0x34b0bcb5, 0xe19b48a8,
    0x391c0cb3, 0xc5c95a63, 0x4ed8aa4a, 0xe3418acb, 0x5b9cca4f, 0x7763e373, 0x682e6ff3, 0xd6b2b8a3,
    0x748f82ee, 0x5defb2fc, 0x78a5636f, 0x43172f60, 0x84c87814, 0xa1f0ab72, 0x8cc70208, 0x1a6439ec,
    0x90befffa, 0x23631e28, 0xa4506ceb, 0xde82bde9, 0xbef9a3f7, 0xb2c67915, 0xc67178f2, 0xe372532b,
    0xca273ece, 0xea26619c, 0xd186b8c7, 0x21c0c207, 0xeada7dd6, 0xcde0eb1e, 0xf57d4f7f, 0xee6ed178,
    0x06f067aa, 0x72176fba, 0x0a637dc5, 0xa2c898a6, 0x113f9804, 0xbef90dae, 0x1b710b35, 0x131c471b,
    0x28db77f5, 0x23047d84, 0x32caab7b, 0x40c72493, 0x3c9ebe0a, 0x15c9bebc, 0x431d67c4, 0x9c100d4c,
    0x4cc5d4be, 0xcb3e42b6, 0x597f299c, 0xfc657e2a, 0x5fcb6fab, 0x3ad6faec, 0x6c44198c, 0x4a475817,
)

_IV = (
    0x6a09e667, 0xf3bcc908, 0xbb67ae85, 0x84caa73b, 0x3c6ef372, 0xfe94f82b, 0xa54ff53a, 0x5f1d36f1,
    0x510e527f, 0xade682d1, 0x9b05688c, 0x2b3e6c1f, 0x1f83d9ab, 0xfb41bd6b, 0x5be0cd19, 0x137e2179,
)

# Message schedule scratch, shared by all instances (compression never
# yields, so one is enough): 80 words as 160 halves.
_W = [0] * 160


def _compress(H, block, off):
    W = _W
    K = _K
    W[0:32] = struct.unpack_from(">32I", block, off)
    for i in range(32, 160, 2):
        # s1 = sigma1(W[t-2]) = rotr19 ^ rotr61 ^ shr6
        xh = W[i - 4]
        xl = W[i - 3]
        s1h = ((xh >> 19) | (xl << 13)) ^ ((xl >> 29) | (xh << 3)) ^ (xh >> 6)
        s1l = ((xl >> 19) | (xh << 13)) ^ ((xh >> 29) | (xl << 3)) ^ ((xl >> 6) | (xh << 26))
        # s0 = sigma0(W[t-15]) = rotr1 ^ rotr8 ^ shr7
        xh = W[i - 30]
        xl = W[i - 29]
        s0h = ((xh >> 1) | (xl << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)
        s0l = ((xl >> 1) | (xh << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))
        lo = (s1l & _M) + W[i - 13] + (s0l & _M) + W[i - 31]
        W[i] = ((s1h & _M) + W[i - 14] + (s0h & _M) + W[i - 32] + (lo >> 32)) & _M
        W[i + 1] = lo & _M

    ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl = H
    for i in range(0, 160, 2):
        # T1 = h + Sigma1(e) + Ch(e, f, g) + K[t] + W[t]
        s1h = ((eh >> 14) | (el << 18)) ^ ((eh >> 18) | (el << 14)) ^ ((el >> 9) | (eh << 23))
        s1l = ((el >> 14) | (eh << 18)) ^ ((el >> 18) | (eh << 14)) ^ ((eh >> 9) | (el << 23))
        lo = hl + (s1l & _M) + (gl ^ (el & (fl ^ gl))) + K[i + 1] + W[i + 1]
        t1h = hh + (s1h & _M) + (gh ^ (eh & (fh ^ gh))) + K[i] + W[i] + (lo >> 32)
        t1l = lo & _M
        # T2 = Sigma0(a) + Maj(a, b, c)
        s0h = ((ah >> 28) | (al << 4)) ^ ((al >> 2) | (ah << 30)) ^ ((al >> 7) | (ah << 25))
        s0l = ((al >> 28) | (ah << 4)) ^ ((ah >> 2) | (al << 30)) ^ ((ah >> 7) | (al << 25))
        hh = gh
        hl = gl
        gh = fh
        gl = fl
        fh = eh
        fl = el
        lo = dl + t1l
        eh = (dh + t1h + (lo >> 32)) & _M
        el = lo & _M
        dh = ch
        dl = cl
        lo = t1l + (s0l & _M) + ((al & bl) | (cl & (al | bl)))
        t1h += (s0h & _M) + ((ah & bh) | (ch & (ah | bh))) + (lo >> 32)
        ch = bh
        cl = bl
        bh = ah
        bl = al
        ah = t1h & _M
        al = lo & _M

    # add the compressed chunk into the state (halves with carry)
    _add(H, 0, ah, al)
    _add(H, 2, bh, bl)
    _add(H, 4, ch, cl)
    _add(H, 6, dh, dl)
    _add(H, 8, eh, el)
    _add(H, 10, fh, fl)
    _add(H, 12, gh, gl)
    _add(H, 14, hh, hl)


def _add(H, i, xh, xl):
    lo = H[i + 1] + xl
    H[i] = (H[i] + xh + (lo >> 32)) & _M
    H[i + 1] = lo & _M


class sha512:
    digest_size = 64
    block_size = 128

    def __init__(self, data=None):
        self._h = list(_IV)
        self._buf = bytearray(128)
        self._n = 0      # bytes waiting in _buf
        self._len = 0    # total bytes hashed
        if data is not None:
            self.update(data)

    def update(self, data):
        mv = memoryview(data)
        n = len(mv)
        self._len += n
        buf = self._buf
        H = self._h
        i = 0
        fill = self._n
        if fill:
            take = 128 - fill
            if take > n:
                take = n
            buf[fill:fill + take] = mv[0:take]
            fill += take
            i = take
            if fill < 128:
                self._n = fill
                return
            _compress(H, buf, 0)
        while n - i >= 128:
            _compress(H, mv, i)
            i += 128
        rest = n - i
        if rest:
            buf[0:rest] = mv[i:n]
        self._n = rest

    def digest(self):
        # pad a copy so that update() may go on after digest()
        H = list(self._h)
        buf = bytearray(self._buf)
        n = self._n
        buf[n] = 0x80
        for j in range(n + 1, 128):
            buf[j] = 0
        if n >= 112:
            _compress(H, buf, 0)
            for j in range(128):
                buf[j] = 0
        bits = self._len * 8
        struct.pack_into(">II", buf, 120, (bits >> 32) & _M, bits & _M)
        struct.pack_into(">II", buf, 112, (bits >> 96) & _M, (bits >> 64) & _M)
        _compress(H, buf, 0)
        return struct.pack(">16I", *H)

    def hexdigest(self):
        return "".join("%02x" % b for b in self.digest())
