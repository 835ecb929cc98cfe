# Ed25519 signature verification (RFC 8032, section 5.1.7) for MicroPython.
#
#   verify(public_key, message, signature) -> bool, never raises on bad input.
#   Out of heap is not bad input: MemoryError propagates (the caller may
#   collect and retry; it must not report a valid image as badly signed).
#
# Strictness: the key A must be a canonical encoding of a curve point
# (y < p, on the curve, no "negative zero" x); S must be < L; R is checked by
# computing R' = [S]B - [k]A and comparing its canonical encoding byte for
# byte with the R of the signature, which rejects every non-canonical or
# off-curve R as well. This is the cofactorless check [S]B = R + [k]A of
# RFC 8032 5.1.7 (the form used by ref10, libsodium, OpenSSL).
#
# Speed: points in extended twisted Edwards coordinates (X:Y:Z:T), Python
# big ints reduced mod p after every product, one joint (Straus) double-scalar
# multiplication with width-5 NAF for k (table of 8 odd multiples of -A,
# built per call) and width-6 NAF for S (16 odd multiples of B in affine form,
# computed once on first use and kept: about 3 KB of heap), inversion and
# square root by an addition chain of squarings (twice as fast as pow()).
from .sha512 import sha512
from . import wnaf

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 2 * _D % _P
_SQRTM1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960

_WA = 5          # NAF width for k (variable base -A)
_WB = 6          # NAF width for S (fixed base B)

_btab = None     # odd multiples of B as (y+x, y-x, 2*d*x*y), affine


def _sq(x, k):
    p = _P
    for _ in range(k):
        x = x * x % p
    return x


def _chain(x):
    # (x^(2^250 - 1), x^11): the common part of inversion and square root
    p = _P
    x2 = x * x % p
    x9 = _sq(x2, 2) * x % p
    x11 = x9 * x2 % p
    t5 = x11 * x11 % p * x9 % p
    t10 = _sq(t5, 5) * t5 % p
    t20 = _sq(t10, 10) * t10 % p
    t40 = _sq(t20, 20) * t20 % p
    t50 = _sq(t40, 10) * t10 % p
    t100 = _sq(t50, 50) * t50 % p
    t200 = _sq(t100, 100) * t100 % p
    return _sq(t200, 50) * t50 % p, x11


def _inv(x):
    # x^(p-2) = (x^(2^250-1))^(2^5) * x^11
    t, x11 = _chain(x)
    return _sq(t, 5) * x11 % _P


def _pow22523(x):
    # x^((p-5)/8) = (x^(2^250-1))^4 * x
    t, _ = _chain(x)
    return _sq(t, 2) * x % _P


def _decode(b):
    """Strict point decoding (RFC 8032 5.1.3). Returns (x, y) or None."""
    p = _P
    n = int.from_bytes(b, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    if y >= p:
        return None
    yy = y * y % p
    u = yy - 1
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    x = u * v3 % p * _pow22523(u * v3 % p * v3 % p * v % p) % p
    vxx = v * x % p * x % p
    if vxx != u % p:
        if vxx != -u % p:
            return None
        x = x * _SQRTM1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


_NAF = 256   # digits per wNAF buffer (s, k < 2**253: at most 254 digits)


def _odd_multiples(x, y, z, t, n):
    """[1, 3, ..., 2n-1] * P in projective "niels" form (Y+X, Y-X, 2dT, 2Z)
    as a flat list of 4n ints."""
    p = _P
    # 2P (extended)
    a = x * x % p
    b = y * y % p
    c = 2 * z * z % p
    h = a + b
    e = h - (x + y) * (x + y) % p
    g = a - b
    f = c + g
    dx = e * f % p
    dy = g * h % p
    dz = f * g % p
    dt = e * h % p
    d_ypx = dy + dx
    d_ymx = dy - dx
    d_t2d = dt * _D2 % p
    d_z2 = 2 * dz
    out = [(y + x) % p, (y - x) % p, t * _D2 % p, 2 * z % p]
    for _ in range(n - 1):
        # P += 2P
        a = (y - x) * d_ymx % p
        b = (y + x) * d_ypx % p
        c = t * d_t2d % p
        d = z * d_z2 % p
        e = b - a
        f = d - c
        g = d + c
        h = b + a
        x = e * f % p
        y = g * h % p
        z = f * g % p
        t = e * h % p
        out.append((y + x) % p)
        out.append((y - x) % p)
        out.append(t * _D2 % p)
        out.append(2 * z % p)
    return out


def _base_table():
    global _btab
    if _btab is None:
        p = _P
        n = 1 << (_WB - 2)
        tab = _odd_multiples(_BX, _BY, 1, _BX * _BY % p, n)
        # normalise to affine (Z = 1) with one inversion (Montgomery's trick)
        zs = [tab[4 * i + 3] for i in range(n)]
        acc = [1] * n
        run = 1
        for i in range(n):
            acc[i] = run
            run = run * zs[i] % p
        run = _inv(run)
        out = [0] * (3 * n)
        for i in range(n - 1, -1, -1):
            zi = run * acc[i] % p           # 1/(2Z): (Y+X + Y-X)/(2Z) = y
            run = run * zs[i] % p
            ypx = tab[4 * i]
            ymx = tab[4 * i + 1]
            y = (ypx + ymx) * zi % p
            x = (ypx - ymx) * zi % p
            out[3 * i] = (y + x) % p
            out[3 * i + 1] = (y - x) % p
            out[3 * i + 2] = _D2 * x % p * y % p
        _btab = out
    return _btab


def _double_scalarmult(s, k, ax, ay):
    """[s]B + [k]A' for A' = (ax, ay); returns projective (X, Y, Z)."""
    p = _P
    tb = _base_table()
    ta = _odd_multiples(ax, ay, 1, ax * ay % p, 1 << (_WA - 2))
    ns, ls = wnaf.digits(s, _WB, _NAF)
    nk, lk = wnaf.digits(k, _WA, _NAF)
    i = ls if ls > lk else lk
    x = 0
    y = 1
    z = 1
    t = 0
    started = False
    while i > 0:
        i -= 1
        ds = ns[i]
        dk = nk[i]
        if started:
            # double; T only when an addition follows
            a = x * x % p
            b = y * y % p
            c = 2 * z * z % p
            h = a + b
            e = h - (x + y) * (x + y) % p
            g = a - b
            f = c + g
            x = e * f % p
            y = g * h % p
            z = f * g % p
            if ds or dk:
                t = e * h % p
        if dk:
            started = True
            if dk & 0x80:
                j = ((256 - dk) >> 1) << 2
                ymx = ta[j]
                ypx = ta[j + 1]
                c = -t * ta[j + 2] % p
            else:
                j = (dk >> 1) << 2
                ypx = ta[j]
                ymx = ta[j + 1]
                c = t * ta[j + 2] % p
            a = (y - x) * ymx % p
            b = (y + x) * ypx % p
            d = z * ta[j + 3] % p
            e = b - a
            f = d - c
            g = d + c
            h = b + a
            x = e * f % p
            y = g * h % p
            z = f * g % p
            t = e * h % p
        if ds:
            started = True
            if ds & 0x80:
                j = ((256 - ds) >> 1) * 3
                ymx = tb[j]
                ypx = tb[j + 1]
                c = -t * tb[j + 2] % p
            else:
                j = (ds >> 1) * 3
                ypx = tb[j]
                ymx = tb[j + 1]
                c = t * tb[j + 2] % p
            a = (y - x) * ymx % p
            b = (y + x) * ypx % p
            d = 2 * z
            e = b - a
            f = d - c
            g = d + c
            h = b + a
            x = e * f % p
            y = g * h % p
            z = f * g % p
            t = e * h % p
    return x, y, z


def _as_bytes(v, n):
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v)
        if n is None or len(v) == n:
            return v
    return None


def verify(public_key, message, signature):
    """True when signature is a valid Ed25519 signature of message under
    public_key (32 raw bytes). False for anything else, never raises."""
    try:
        pk = _as_bytes(public_key, 32)
        sig = _as_bytes(signature, 64)
        if pk is None or sig is None:
            return False
        if not isinstance(message, (bytes, bytearray, memoryview)):
            return False
        s = int.from_bytes(sig[32:], "little")
        if s >= _L:
            return False
        a = _decode(pk)
        if a is None:
            return False
        h = sha512(sig[:32])
        h.update(pk)
        h.update(message)
        k = int.from_bytes(h.digest(), "little") % _L
        # R' = [S]B - [k]A, compared with R in canonical encoding
        x, y, z = _double_scalarmult(s, k, _P - a[0] if a[0] else 0, a[1])
        zi = _inv(z)
        x = x * zi % _P
        y = y * zi % _P
        return (y | ((x & 1) << 255)) == int.from_bytes(sig[:32], "little")
    except MemoryError:
        raise
    except Exception:
        # malformed input of an unexpected kind: not valid
        return False
