"""CPython fixture generator for the ECDSA P-256 device tests
(tests/device/test_ecdsa_p256.py).

make(d) writes into directory d:
  p256_sigs.bin   signatures made by `cryptography` (OpenSSL) on keys derived
                  from a seeded random stream, messages of many lengths
  p256_edge.bin   edge cases: high and low s, r + n < p (x(R) >= n), R at
                  infinity, the doubling inside an addition, malformed DER,
                  r or s out of range, bad keys; each with the verdict, and
                  every verdict checked against OpenSSL here.
Records: u8 kind (b"m" message, b"d" digest), u8 expected, then four
u16-length-prefixed fields: label, public key, signature, message or digest.
Nothing here is a copied third-party vector: everything is generated and
cross-checked at test time.
"""
import hashlib
import os
import random
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


# --- affine reference arithmetic (host only, for constructing edge cases)

def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0]:
        if (a[1] + b[1]) % P == 0:
            return None
        lam = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, P) % P
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return x, (lam * (a[0] - x) - a[1]) % P


def _mul(k, pt):
    r = None
    while k:
        if k & 1:
            r = _add(r, pt)
        pt = _add(pt, pt)
        k >>= 1
    return r


def _sqrt(v):
    y = pow(v, (P + 1) // 4, P)   # P = 3 mod 4
    return y if y * y % P == v % P else None


def point_bytes(pt):
    return b"\x04" + pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")


def pub_bytes(priv):
    return priv.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)


def der_int(v, pad=0):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big") if v >= 0 else None
    b = b"\x00" * pad + b
    return b"\x02" + bytes([len(b)]) + b


def der_sig(r, s):
    body = der_int(r) + der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def openssl_ok(pub, data, sig, digest=False):
    """OpenSSL's verdict (cryptography), or None when it cannot load the key."""
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    except (ValueError, TypeError):
        return None
    alg = ec.ECDSA(utils.Prehashed(hashes.SHA256())) if digest else ec.ECDSA(hashes.SHA256())
    try:
        key.verify(sig, data, alg)
        return True
    except InvalidSignature:
        return False


def _rec(kind, ok, label, pub, sig, data):
    out = bytes([ord(kind), 1 if ok else 0])
    for f in (label.encode(), pub, sig, data):
        out += struct.pack("<H", len(f)) + f
    return out


def write_sigs(d, n=64, seed=256):
    rnd = random.Random(seed)
    with open(os.path.join(d, "p256_sigs.bin"), "wb") as f:
        for i in range(n):
            priv = ec.derive_private_key(rnd.randrange(1, N), ec.SECP256R1())
            size = rnd.choice((0, 1, 31, 32, 33, 55, 56, 63, 64, 65, 200, 1000)) if i % 4 else rnd.randrange(0, 300)
            msg = rnd.randbytes(size)
            sig = priv.sign(msg, ec.ECDSA(hashes.SHA256()))
            assert openssl_ok(pub_bytes(priv), msg, sig)
            f.write(_rec("m", True, "cryptography #%d" % i, pub_bytes(priv), sig, msg))


def edge_cases(seed=2562):
    """[(kind, expected, label, pub, sig, data)]"""
    rnd = random.Random(seed)
    cases = []
    priv = ec.derive_private_key(rnd.randrange(1, N), ec.SECP256R1())
    pub = pub_bytes(priv)
    msg = b"edge case message"
    dig = hashlib.sha256(msg).digest()
    sig = priv.sign(msg, ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(sig)

    def add(ok, label, sg, pk=pub, data=msg, kind="m"):
        cases.append((kind, ok, label, pk, sg, data))

    add(True, "real signature", sig)
    add(True, "real signature, other s (n - s)", der_sig(r, N - s))
    add(True, "real signature over the digest", sig, data=dig, kind="d")
    add(False, "digest of another message", sig, data=hashlib.sha256(msg + b"!").digest(), kind="d")
    # a signature whose r has the top bit set (DER needs the 0x00 byte) ...
    while True:
        sg = priv.sign(msg, ec.ECDSA(hashes.SHA256()))
        r2, s2 = utils.decode_dss_signature(sg)
        if r2 >> 255:
            break
    add(True, "r with a 0x00 sign byte", sg)
    rb = r2.to_bytes(32, "big")
    body = b"\x02\x20" + rb + der_int(s2)
    add(False, "r negative (sign byte dropped)", b"\x30" + bytes([len(body)]) + body)
    body = der_int(r, pad=1) + der_int(s)
    add(False, "r with a superfluous 0x00", b"\x30" + bytes([len(body)]) + body)
    body = der_int(r) + der_int(s, pad=1)
    add(False, "s with a superfluous 0x00", b"\x30" + bytes([len(body)]) + body)
    body = sig[2:]
    add(False, "long-form outer length", b"\x30\x81" + bytes([len(body)]) + body)
    add(False, "trailing byte after the SEQUENCE", sig + b"\x00")
    add(False, "trailing byte inside the SEQUENCE", b"\x30" + bytes([len(body) + 1]) + body + b"\x00")
    add(False, "outer length one short", b"\x30" + bytes([len(body) - 1]) + body)
    add(False, "truncated", sig[:-1])
    add(False, "INTEGER tag changed", sig[:2] + b"\x03" + sig[3:])
    add(False, "SEQUENCE tag changed", b"\x31" + sig[1:])
    add(False, "raw r|s (64 bytes, not DER)", r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    add(False, "empty signature", b"")
    add(False, "r = 0", der_sig(0, s))
    add(False, "s = 0", der_sig(r, 0))
    add(False, "r = n", der_sig(N, s))
    add(False, "s = n", der_sig(r, N))
    add(False, "r + n", der_sig(r + N, s))
    add(False, "s + n", der_sig(r, s + N))
    add(False, "zero-length r", b"\x30" + bytes([2 + len(der_int(s))]) + b"\x02\x00" + der_int(s))
    # keys
    q = (int.from_bytes(pub[1:33], "big"), int.from_bytes(pub[33:], "big"))
    add(False, "key off the curve (y + 1)", sig, pk=point_bytes((q[0], (q[1] + 1) % P)))
    add(False, "key with y = p + y", sig, pk=b"\x04" + pub[1:33] + (q[1] + P).to_bytes(32, "big")
        if q[1] + P < 2**256 else pub[:64] + b"\x00")
    add(False, "key with x = p + x", sig, pk=b"\x04" + (q[0] + P).to_bytes(32, "big") + pub[33:]
        if q[0] + P < 2**256 else pub[:64] + b"\x00")
    add(False, "compressed key", sig, pk=bytes([2 + (q[1] & 1)]) + pub[1:33])
    add(False, "hybrid prefix 0x06/0x07", sig, pk=bytes([6 + (q[1] & 1)]) + pub[1:])
    add(False, "key of 64 bytes (no prefix)", sig, pk=pub[1:])
    add(False, "all-zero key", sig, pk=bytes(65))
    add(False, "key -Q", sig, pk=point_bytes((q[0], P - q[1])))

    # x(R) >= n: choose R with n <= x < p, then solve for the key Q
    x = N
    while True:
        y = _sqrt((x * x * x - 3 * x + B) % P)
        if y is not None:
            break
        x += 1
    rr = x - N
    s3 = rnd.randrange(1, N)
    e = int.from_bytes(dig, "big")
    u1 = e * pow(s3, -1, N) % N
    u2 = rr * pow(s3, -1, N) % N
    neg = _mul(u1, G)
    qq = _mul(pow(u2, -1, N), _add((x, y), (neg[0], P - neg[1])))
    add(True, "x(R) >= n (r + n < p branch)", der_sig(rr, s3), pk=point_bytes(qq))
    add(False, "x(R) >= n, r = x(R) (not reduced)", der_sig(x, s3), pk=point_bytes(qq))
    # key G (private key 1), u1 = u2 = 1: u1*G + u2*Q = G + G, the equal-point case
    two_g = _add(G, G)
    r4 = two_g[0] % N
    add(True, "key G, u1 = u2 = 1 (doubling inside an addition)", der_sig(r4, r4),
        pk=point_bytes(G), data=r4.to_bytes(32, "big"), kind="d")
    # key -G, u1 = u2 = 1: R = G - G = infinity
    add(False, "key -G, u1 = u2 = 1 (R at infinity)", der_sig(5, 5),
        pk=point_bytes((G[0], P - G[1])), data=(5).to_bytes(32, "big"), kind="d")
    # u1 + u2 * d = 0 for a real key: R at infinity after many steps
    dpriv = priv.private_numbers().private_value
    r5 = rnd.randrange(1, N)
    e5 = -r5 * dpriv % N
    add(False, "u1*G + u2*Q at infinity (e = -r*d)", der_sig(r5, 7), data=e5.to_bytes(32, "big"), kind="d")
    return cases


_NARROWER = ("compressed key", "hybrid prefix 0x06/0x07")


def write_edge(d):
    with open(os.path.join(d, "p256_edge.bin"), "wb") as f:
        for kind, ok, label, pub, sig, data in edge_cases():
            ref = openssl_ok(pub, data, sig, digest=(kind == "d"))
            # OpenSSL refuses to load bad keys (None) and agrees on everything
            # else, except the key encodings the contract leaves out (65 bytes only)
            assert ref == ok or (ref is None and not ok) or label in _NARROWER, (label, ref, ok)
            f.write(_rec(kind, ok, label, pub, sig, data))


def make(d):
    write_sigs(d)
    write_edge(d)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/p256-fixtures"
    os.makedirs(out, exist_ok=True)
    make(out)
    print(out)
