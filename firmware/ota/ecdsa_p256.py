# ECDSA verification on NIST P-256 (secp256r1) with SHA-256, for MicroPython.
#
#   verify(public_key, message, signature) -> bool        (SHA-256 inside)
#   verify_digest(public_key, digest32, signature) -> bool
#   parse_sig(der) -> (r, s) or None                       (strict DER)
#
# public_key is the 65-byte uncompressed SEC1 point 0x04 | X | Y; signature the
# DER ECDSA-Sig-Value SEQUENCE { r INTEGER, s INTEGER } (SEC1 4.1.4, X9.62).
# Nothing raises on bad input: wrong types or lengths, non-minimal or trailing
# DER, negative or zero-padded INTEGERs, r or s outside 1..n-1, a key that is
# off the curve or has a coordinate >= p all return False. Low-s is not
# required (ECDSA accepts both s and n - s).
#
# Speed: Jacobian coordinates (a = -3 doubling, 4M+4S), one joint (Straus)
# double-scalar multiplication u1*G + u2*Q with width-6 NAF for u1 (16 odd
# multiples of G in affine form, made once on first use and kept: about 2 KB)
# and width-5 NAF for u2 (8 odd multiples of Q in Jacobian form, built per
# call). The only inversion is s^-1 mod n: the result is
# compared projectively (X == r * Z^2, and (r + n) * Z^2 when r + n < p), so
# no inversion mod p is needed per verify.
import hashlib
from . import wnaf

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

_WG = 6          # NAF width for u1 (fixed base G)
_WQ = 5          # NAF width for u2 (variable base Q)

_gtab = None     # odd multiples of G as x, y (affine), flat


def _dbl(x, y, z):
    # dbl-2001-b (a = -3); the point at infinity (z = 0) stays there
    p = _P
    zz = z * z % p
    yy = y * y % p
    b = x * yy % p
    a = 3 * (x - zz) * (x + zz) % p
    x3 = (a * a - 8 * b) % p
    return x3, (a * (4 * b - x3) - 8 * (yy * yy % p)) % p, 2 * y * z % p


def _add(x1, y1, z1, x2, y2, z2):
    """(x1:y1:z1) + (x2:y2:z2) in Jacobian coordinates (z2 = 1 for an affine
    point). Handles the point at infinity (z = 0) and equal or opposite
    points."""
    p = _P
    if not z1:
        return x2, y2, z2
    zz1 = z1 * z1 % p
    if z2 == 1:
        u1 = x1
        s1 = y1
    else:
        zz2 = z2 * z2 % p
        u1 = x1 * zz2 % p
        s1 = y1 * zz2 % p * z2 % p
    h = x2 * zz1 % p - u1
    r = y2 * z1 % p * zz1 % p - s1
    if not h:
        if not r:
            return _dbl(x1, y1, z1)
        return 1, 1, 0
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    z3 = z1 * h % p
    if z2 != 1:
        z3 = z3 * z2 % p
    return x3, (r * (v - x3) - s1 * hhh) % p, z3


_NAF = 260   # digits per wNAF buffer (u1, u2 < n < 2**256: at most 257 digits)


def _odd_multiples(x, y, z, n):
    """[1, 3, ..., 2n-1] * P in Jacobian form as a flat list of (X, Y, Z)
    for the n multiples."""
    dx, dy, dz = _dbl(x, y, z)
    out = [0] * (3 * n)
    j = 0
    while True:
        out[j] = x
        out[j + 1] = y
        out[j + 2] = z
        j += 3
        if j == 3 * n:
            return out
        x, y, z = _add(x, y, z, dx, dy, dz)


def _base_table():
    global _gtab
    if _gtab is None:
        p = _P
        n = 1 << (_WG - 2)
        tab = _odd_multiples(_GX, _GY, 1, n)
        # normalise to affine with one inversion (Montgomery's trick)
        acc = [1] * n
        run = 1
        for i in range(n):
            acc[i] = run
            run = run * tab[3 * i + 2] % p
        run = pow(run, p - 2, p)
        out = [0] * (2 * n)
        for i in range(n - 1, -1, -1):
            zi = run * acc[i] % p
            run = run * tab[3 * i + 2] % p
            zi2 = zi * zi % p
            out[2 * i] = tab[3 * i] * zi2 % p
            out[2 * i + 1] = tab[3 * i + 1] * zi2 % p * zi % p
        _gtab = out
    return _gtab


def _on_curve(x, y):
    p = _P
    return x < p and y < p and (y * y - (x * x + -3) * x - _B) % p == 0


def _int(b, i, end):
    """Strict DER INTEGER at b[i:end]: (value, next index) or None. Positive,
    minimal length and no superfluous leading zero byte."""
    if end - i < 3 or b[i] != 0x02:
        return None
    n = b[i + 1]
    i += 2
    if n < 1 or n > 33 or n > end - i:
        return None
    if b[i] & 0x80:
        return None                 # negative
    if b[i] == 0 and n > 1 and not b[i + 1] & 0x80:
        return None                 # superfluous leading zero
    return int.from_bytes(b[i:i + n], "big"), i + n


def parse_sig(der):
    """(r, s) of a strict DER ECDSA-Sig-Value with 1 <= r, s < n, else None."""
    try:
        if not isinstance(der, (bytes, bytearray, memoryview)):
            return None
        b = bytes(der)
        end = len(b)
        # content <= 70 bytes: short-form length only
        if end < 8 or end > 72 or b[0] != 0x30 or b[1] != end - 2:
            return None
        t = _int(b, 2, end)
        if t is None:
            return None
        r, i = t
        t = _int(b, i, end)
        if t is None:
            return None
        s, i = t
        if i != end or not 0 < r < _N or not 0 < s < _N:
            return None
        return r, s
    except Exception:
        return None


def public_point(public_key):
    """(x, y) of a 65-byte uncompressed SEC1 key on the curve, else None."""
    try:
        if not isinstance(public_key, (bytes, bytearray, memoryview)):
            return None
        pk = bytes(public_key)
        if len(pk) != 65 or pk[0] != 4:
            return None
        x = int.from_bytes(pk[1:33], "big")
        y = int.from_bytes(pk[33:], "big")
        if not _on_curve(x, y):
            return None
        return x, y
    except Exception:
        return None


def _verify(q, e, rs):
    p = _P
    n = _N
    r, s = rs
    w = pow(s, n - 2, n)
    u1 = e * w % n
    u2 = r * w % n
    tg = _base_table()
    tq = _odd_multiples(q[0], q[1], 1, 1 << (_WQ - 2))
    ng, lg = wnaf.digits(u1, _WG, _NAF)
    nq, lq = wnaf.digits(u2, _WQ, _NAF)
    i = lg if lg > lq else lq
    x = 1
    y = 1
    z = 0
    while i > 0:
        i -= 1
        if z:
            x, y, z = _dbl(x, y, z)
        d = nq[i]
        if d:
            if d & 0x80:
                j = ((256 - d) >> 1) * 3
                x, y, z = _add(x, y, z, tq[j], p - tq[j + 1], tq[j + 2])
            else:
                j = (d >> 1) * 3
                x, y, z = _add(x, y, z, tq[j], tq[j + 1], tq[j + 2])
        d = ng[i]
        if d:
            if d & 0x80:
                j = (256 - d) - 1
                x, y, z = _add(x, y, z, tg[j], p - tg[j + 1], 1)
            else:
                j = d - 1
                x, y, z = _add(x, y, z, tg[j], tg[j + 1], 1)
    if not z:
        return False
    # x(R) mod n == r  <=>  X == r' * Z^2 for r' in {r, r + n} below p
    zz = z * z % p
    if r * zz % p == x:
        return True
    r += n
    return r < p and r * zz % p == x


def verify_digest(public_key, digest, signature):
    """True when signature (DER) is a valid ECDSA P-256 signature of the
    32-byte SHA-256 digest under public_key (65 bytes). Never raises on bad
    input; MemoryError (no verdict) propagates, as in ed25519.verify."""
    try:
        if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != 32:
            return False
        rs = parse_sig(signature)
        if rs is None:
            return False
        q = public_point(public_key)
        if q is None:
            return False
        return _verify(q, int.from_bytes(bytes(digest), "big"), rs)
    except MemoryError:
        raise   # out of heap is not a bad signature (the image check retries it)
    except Exception:
        # malformed input of an unexpected kind: not valid
        return False


def verify(public_key, message, signature):
    """True when signature (DER) is a valid ECDSA P-256 / SHA-256 signature of
    message under public_key (65-byte uncompressed point). Never raises on bad
    input; MemoryError (no verdict) propagates."""
    try:
        if not isinstance(message, (bytes, bytearray, memoryview)):
            return False
        return verify_digest(public_key, hashlib.sha256(message).digest(), signature)
    except MemoryError:
        raise
    except Exception:
        return False
