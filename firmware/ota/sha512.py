# Streaming SHA-512 (FIPS 180-4) for MicroPython, whose hashlib has none.
#
# Written for 31-bit small ints (a 32-bit port: ESP32, RP2040): every 64-bit
# word is four 16-bit limbs, most significant first, in preallocated
# array('H') buffers and local variables, so no intermediate value reaches
# 2**30 and hashing allocates nothing per block on any port (the previous
# version with 32-bit halves made a big int of nearly every value on a 32-bit
# port). Rotations by 16*q + r pick limbs by q and shift by r, masking before
# the left shift. The round constants and IV are bytes (big-endian), turned
# into limb arrays once at import.
#   h = sha512(b"abc"); h.update(more); h.digest() -> 64 bytes
from array import array

# K[0..79], 64-bit big-endian
_KB = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)
_IVB = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)


def _limbs(b):
    a = array("H", bytes(len(b)))    # len(b) // 2 zero limbs
    for i in range(len(a)):
        a[i] = b[2 * i] << 8 | b[2 * i + 1]
    return a


_K = _limbs(_KB)      # 320 limbs
_IV = _limbs(_IVB)    # 32 limbs
# message schedule scratch, shared by all instances (compression never
# yields, so one is enough): 80 words as 320 limbs
_W = array("H", bytes(640))


def _compress(H, block, off):
    W = _W
    K = _K
    for i in range(64):
        W[i] = block[off] << 8 | block[off + 1]
        off += 2
    for j in range(64, 320, 4):
        # W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]
        # s1 = rotr19 ^ rotr61 ^ shr6, s0 = rotr1 ^ rotr8 ^ shr7
        x0 = W[j - 5]
        x1 = W[j - 6]
        x2 = W[j - 7]
        x3 = W[j - 8]
        y0 = W[j - 57]
        y1 = W[j - 58]
        y2 = W[j - 59]
        y3 = W[j - 60]
        u = ((x1 >> 3 | (x2 & 0x7) << 13) ^ (x3 >> 13 | (x0 & 0x1FFF) << 3) ^ (x0 >> 6 | (x1 & 0x3F) << 10))
        u += ((y0 >> 1 | (y1 & 0x1) << 15) ^ (y0 >> 8 | (y1 & 0xFF) << 8) ^ (y0 >> 7 | (y1 & 0x7F) << 9))
        u += W[j - 25] + W[j - 61]
        W[j + 3] = u & 0xFFFF
        u = (u >> 16) + ((x2 >> 3 | (x3 & 0x7) << 13) ^ (x0 >> 13 | (x1 & 0x1FFF) << 3) ^ (x1 >> 6 | (x2 & 0x3F) << 10))
        u += ((y1 >> 1 | (y2 & 0x1) << 15) ^ (y1 >> 8 | (y2 & 0xFF) << 8) ^ (y1 >> 7 | (y2 & 0x7F) << 9))
        u += W[j - 26] + W[j - 62]
        W[j + 2] = u & 0xFFFF
        u = (u >> 16) + ((x3 >> 3 | (x0 & 0x7) << 13) ^ (x1 >> 13 | (x2 & 0x1FFF) << 3) ^ (x2 >> 6 | (x3 & 0x3F) << 10))
        u += ((y2 >> 1 | (y3 & 0x1) << 15) ^ (y2 >> 8 | (y3 & 0xFF) << 8) ^ (y2 >> 7 | (y3 & 0x7F) << 9))
        u += W[j - 27] + W[j - 63]
        W[j + 1] = u & 0xFFFF
        u = (u >> 16) + ((x0 >> 3 | (x1 & 0x7) << 13) ^ (x2 >> 13 | (x3 & 0x1FFF) << 3) ^ (x3 >> 6))
        u += ((y3 >> 1 | (y0 & 0x1) << 15) ^ (y3 >> 8 | (y0 & 0xFF) << 8) ^ (y3 >> 7))
        u += W[j - 28] + W[j - 64]
        W[j + 0] = u & 0xFFFF
    a0 = H[3]
    a1 = H[2]
    a2 = H[1]
    a3 = H[0]
    b0 = H[7]
    b1 = H[6]
    b2 = H[5]
    b3 = H[4]
    c0 = H[11]
    c1 = H[10]
    c2 = H[9]
    c3 = H[8]
    d0 = H[15]
    d1 = H[14]
    d2 = H[13]
    d3 = H[12]
    e0 = H[19]
    e1 = H[18]
    e2 = H[17]
    e3 = H[16]
    f0 = H[23]
    f1 = H[22]
    f2 = H[21]
    f3 = H[20]
    g0 = H[27]
    g1 = H[26]
    g2 = H[25]
    g3 = H[24]
    h0 = H[31]
    h1 = H[30]
    h2 = H[29]
    h3 = H[28]
    for j in range(0, 320, 4):
        # T1 = h + Sigma1(e) + Ch(e, f, g) + K[t] + W[t]; Sigma1 = rotr14 ^ rotr18 ^ rotr41
        u = h0 + ((e0 >> 14 | (e1 & 0x3FFF) << 2) ^ (e1 >> 2 | (e2 & 0x3) << 14) ^ (e2 >> 9 | (e3 & 0x1FF) << 7))
        u += (g0 ^ (e0 & (f0 ^ g0))) + K[j + 3] + W[j + 3]
        t0 = u & 0xFFFF
        u = (u >> 16) + h1 + ((e1 >> 14 | (e2 & 0x3FFF) << 2) ^ (e2 >> 2 | (e3 & 0x3) << 14) ^ (e3 >> 9 | (e0 & 0x1FF) << 7))
        u += (g1 ^ (e1 & (f1 ^ g1))) + K[j + 2] + W[j + 2]
        t1 = u & 0xFFFF
        u = (u >> 16) + h2 + ((e2 >> 14 | (e3 & 0x3FFF) << 2) ^ (e3 >> 2 | (e0 & 0x3) << 14) ^ (e0 >> 9 | (e1 & 0x1FF) << 7))
        u += (g2 ^ (e2 & (f2 ^ g2))) + K[j + 1] + W[j + 1]
        t2 = u & 0xFFFF
        u = (u >> 16) + h3 + ((e3 >> 14 | (e0 & 0x3FFF) << 2) ^ (e0 >> 2 | (e1 & 0x3) << 14) ^ (e1 >> 9 | (e2 & 0x1FF) << 7))
        u += (g3 ^ (e3 & (f3 ^ g3))) + K[j + 0] + W[j + 0]
        t3 = u & 0xFFFF
        # e' = d + T1
        u = d0 + t0
        m0 = u & 0xFFFF
        u = (u >> 16) + d1 + t1
        m1 = u & 0xFFFF
        u = (u >> 16) + d2 + t2
        m2 = u & 0xFFFF
        u = (u >> 16) + d3 + t3
        m3 = u & 0xFFFF
        # a' = T1 + Sigma0(a) + Maj(a, b, c); Sigma0 = rotr28 ^ rotr34 ^ rotr39
        u = t0 + ((a1 >> 12 | (a2 & 0xFFF) << 4) ^ (a2 >> 2 | (a3 & 0x3) << 14) ^ (a2 >> 7 | (a3 & 0x7F) << 9))
        u += (a0 & b0) | (c0 & (a0 | b0))
        n0 = u & 0xFFFF
        u = (u >> 16) + t1 + ((a2 >> 12 | (a3 & 0xFFF) << 4) ^ (a3 >> 2 | (a0 & 0x3) << 14) ^ (a3 >> 7 | (a0 & 0x7F) << 9))
        u += (a1 & b1) | (c1 & (a1 | b1))
        n1 = u & 0xFFFF
        u = (u >> 16) + t2 + ((a3 >> 12 | (a0 & 0xFFF) << 4) ^ (a0 >> 2 | (a1 & 0x3) << 14) ^ (a0 >> 7 | (a1 & 0x7F) << 9))
        u += (a2 & b2) | (c2 & (a2 | b2))
        n2 = u & 0xFFFF
        u = (u >> 16) + t3 + ((a0 >> 12 | (a1 & 0xFFF) << 4) ^ (a1 >> 2 | (a2 & 0x3) << 14) ^ (a1 >> 7 | (a2 & 0x7F) << 9))
        u += (a3 & b3) | (c3 & (a3 | b3))
        n3 = u & 0xFFFF
        h0 = g0; h1 = g1; h2 = g2; h3 = g3
        g0 = f0; g1 = f1; g2 = f2; g3 = f3
        f0 = e0; f1 = e1; f2 = e2; f3 = e3
        e0 = m0; e1 = m1; e2 = m2; e3 = m3
        d0 = c0; d1 = c1; d2 = c2; d3 = c3
        c0 = b0; c1 = b1; c2 = b2; c3 = b3
        b0 = a0; b1 = a1; b2 = a2; b3 = a3
        a0 = n0; a1 = n1; a2 = n2; a3 = n3
    # add the compressed chunk into the state
    _add(H, 0, a3, a2, a1, a0)
    _add(H, 4, b3, b2, b1, b0)
    _add(H, 8, c3, c2, c1, c0)
    _add(H, 12, d3, d2, d1, d0)
    _add(H, 16, e3, e2, e1, e0)
    _add(H, 20, f3, f2, f1, f0)
    _add(H, 24, g3, g2, g1, g0)
    _add(H, 28, h3, h2, h1, h0)


def _add(H, i, x3, x2, x1, x0):
    u = H[i + 3] + x0
    H[i + 3] = u & 0xFFFF
    u = (u >> 16) + H[i + 2] + x1
    H[i + 2] = u & 0xFFFF
    u = (u >> 16) + H[i + 1] + x2
    H[i + 1] = u & 0xFFFF
    H[i] = ((u >> 16) + H[i] + x3) & 0xFFFF


class sha512:
    digest_size = 64
    block_size = 128

    def __init__(self, data=None):
        self._h = array("H", _IV)
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
        H = array("H", self._h)
        buf = bytearray(self._buf)
        n = self._n
        buf[n] = 0x80
        for j in range(n + 1, 128):
            buf[j] = 0
        if n >= 112:
            _compress(H, buf, 0)
            for j in range(128):
                buf[j] = 0
        # length in bits, big-endian in the last 16 bytes, a byte at a time
        v = self._len
        buf[127] = (v << 3) & 0xFF
        v >>= 5
        j = 126
        while v:
            buf[j] = v & 0xFF
            v >>= 8
            j -= 1
        _compress(H, buf, 0)
        out = bytearray(64)
        for j in range(32):
            out[2 * j] = H[j] >> 8
            out[2 * j + 1] = H[j] & 0xFF
        return bytes(out)

    def hexdigest(self):
        return "".join("%02x" % b for b in self.digest())
