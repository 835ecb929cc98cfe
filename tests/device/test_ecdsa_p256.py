# mptest: prep=tests.prep.p256:make
# ECDSA P-256 verification (firmware/ota/ecdsa_p256.py): signatures made by the
# `cryptography` package (OpenSSL) on seeded keys, edge cases whose verdicts
# were cross-checked against OpenSSL (tests/prep/p256.py), mutations and
# malformed input.
import hashlib
import struct
import mptest
from firmware.ota import ecdsa_p256

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF


def _records(name):
    # streamed one record at a time
    with open(mptest.data_path(name), "rb") as f:
        while True:
            h = f.read(2)
            if not h:
                break
            fields = []
            for _ in range(4):
                n = struct.unpack("<H", f.read(2))[0]
                fields.append(f.read(n))
            yield chr(h[0]), bool(h[1]), fields[0].decode(), fields[1], fields[2], fields[3]


def _first():
    for rec in _records("p256_sigs.bin"):
        return rec[3], rec[5], rec[4]


class _Rand:
    def __init__(self, seed):
        self.s = seed

    def below(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s % n


def _flip(b, bit):
    b = bytearray(b)
    b[bit >> 3] ^= 1 << (bit & 7)
    return bytes(b)


def test_cryptography_signatures_verify():
    n = 0
    for kind, ok, label, pk, sig, msg in _records("p256_sigs.bin"):
        mptest.true(ecdsa_p256.verify(pk, msg, sig) is True, label, "msg len", len(msg))
        n += 1
    mptest.true(n >= 64, "records", n)


def test_verify_digest_matches_verify():
    for i, (kind, ok, label, pk, sig, msg) in enumerate(_records("p256_sigs.bin")):
        d = hashlib.sha256(msg).digest()
        mptest.true(ecdsa_p256.verify_digest(pk, d, sig) is True, label)
        mptest.true(ecdsa_p256.verify_digest(pk, _flip(d, i * 7 % 256), sig) is False, label)
        if i == 8:
            break


def test_mutated_signatures_fail():
    rnd = _Rand(256)
    for i, (kind, ok, label, pk, sig, msg) in enumerate(_records("p256_sigs.bin")):
        what = i % 4
        if what < 2:
            # a bit of the r or s value (not the DER framing)
            off = 4 if what == 0 else len(sig) - 32
            bad = _flip(sig, off * 8 + rnd.below(256))
            mptest.true(not ecdsa_p256.verify(pk, msg, bad), label, "sig bit")
        elif what == 2 and msg:
            bad = _flip(msg, rnd.below(len(msg) * 8))
            mptest.true(not ecdsa_p256.verify(pk, bad, sig), label, "msg bit")
        else:
            bad = _flip(pk, 8 + rnd.below(512))
            mptest.true(not ecdsa_p256.verify(bad, msg, sig), label, "key bit")


def test_signature_of_another_key_fails():
    prev = None
    for i, rec in enumerate(_records("p256_sigs.bin")):
        if prev is not None:
            mptest.true(not ecdsa_p256.verify(rec[3], prev[5], prev[4]), rec[2])
        prev = rec
        if i == 10:
            break


def test_edge_cases_checked_against_openssl():
    n = 0
    for kind, ok, label, pk, sig, data in _records("p256_edge.bin"):
        if kind == "d":
            got = ecdsa_p256.verify_digest(pk, data, sig)
        else:
            got = ecdsa_p256.verify(pk, data, sig)
        mptest.eq(got, ok, label)
        n += 1
    mptest.true(n >= 35, "cases", n)


def test_strict_der():
    der = ecdsa_p256.parse_sig
    mptest.eq(der(b"\x30\x06\x02\x01\x01\x02\x01\x02"), (1, 2))
    mptest.eq(der(b"\x30\x07\x02\x02\x00\x80\x02\x01\x02"), (128, 2), "0x00 needed before 0x80")
    mptest.eq(der(b"\x30\x07\x02\x02\x00\x7f\x02\x01\x02"), None, "superfluous 0x00")
    mptest.eq(der(b"\x30\x06\x02\x01\x80\x02\x01\x02"), None, "negative r")
    mptest.eq(der(b"\x30\x06\x02\x01\x01\x02\x01\xff"), None, "negative s")
    mptest.eq(der(b"\x30\x81\x06\x02\x01\x01\x02\x01\x02"), None, "long-form length")
    mptest.eq(der(b"\x30\x06\x02\x01\x01\x02\x01\x02\x00"), None, "trailing byte")
    mptest.eq(der(b"\x30\x07\x02\x01\x01\x02\x01\x02\x00"), None, "trailing byte inside")
    mptest.eq(der(b"\x30\x06\x02\x01\x01\x02\x02\x02"), None, "INTEGER runs past the end")
    mptest.eq(der(b"\x30\x06\x02\x01\x00\x02\x01\x02"), None, "r = 0")
    mptest.eq(der(b"\x30\x05\x02\x00\x02\x01\x02"), None, "empty INTEGER")
    big = b"\x02\x21\x00" + N.to_bytes(32, "big")
    mptest.eq(der(b"\x30\x26" + big + b"\x02\x01\x01"), None, "r = n")
    nm1 = b"\x02\x21\x00" + (N - 1).to_bytes(32, "big")
    mptest.eq(der(b"\x30\x46" + nm1 + nm1), (N - 1, N - 1), "r = s = n - 1")
    mptest.eq(der(b"\x30\x47" + nm1 + b"\x02\x22\x00" + (N - 1).to_bytes(33, "big")), None,
              "34-byte INTEGER")
    for bad in (None, 5, "30060201010201", [0x30, 6], b"", b"\x30", b"\x30\x00"):
        mptest.eq(der(bad), None, repr(bad))


def test_public_key_checks():
    pk, msg, sig = _first()
    mptest.true(ecdsa_p256.public_point(pk) is not None)
    x = int.from_bytes(pk[1:33], "big")
    y = int.from_bytes(pk[33:], "big")
    pt = ecdsa_p256.public_point(pk)
    mptest.eq(pt, (x, y))
    mptest.eq((y * y - x * x * x + 3 * x - ecdsa_p256._B) % P, 0, "on the curve")
    mptest.eq(ecdsa_p256.public_point(b"\x04" + bytes(64)), None, "(0, 0)")
    mptest.eq(ecdsa_p256.public_point(pk[:64]), None, "64 bytes")
    mptest.eq(ecdsa_p256.public_point(b"\x05" + pk[1:]), None, "prefix 5")
    mptest.eq(ecdsa_p256.public_point(b"\x04" + P.to_bytes(32, "big") + pk[33:]), None, "x = p")


def test_garbage_returns_false_without_raising():
    pk, msg, sig = _first()
    cases = [
        (None, msg, sig), (pk, msg, None), (pk, None, sig), (pk, "text", sig),
        (pk[:64], msg, sig), (pk + b"\x00", msg, sig), (pk, msg, sig[:-1]), (pk, msg, sig + b"\x00"),
        (pk, msg, b""), (b"", b"", b""), (65, msg, 70), (pk.hex(), msg, sig), (pk, msg, sig.hex()),
        (list(pk), msg, sig), (pk, msg, list(sig)), (pk, 0, sig), (b"\xff" * 65, msg, sig),
        (bytes(65), msg, sig), (pk, msg, bytes(72)), (pk, msg, b"\xff" * 72), (pk, msg, b"\x30" * 72),
    ]
    for i, (k, m, s) in enumerate(cases):
        r = ecdsa_p256.verify(k, m, s)
        mptest.true(r is False, "case", i, "returned", r)
    d = hashlib.sha256(msg).digest()
    for dd in (None, d[:31], d + b"\x00", b"", d.hex(), 5):
        mptest.true(ecdsa_p256.verify_digest(pk, dd, sig) is False, repr(dd))
    mptest.true(ecdsa_p256.verify(pk, msg, sig) is True)


def test_accepts_bytearray_and_memoryview():
    pk, msg, sig = _first()
    mptest.true(ecdsa_p256.verify(bytearray(pk), memoryview(msg), memoryview(sig)))
    mptest.true(ecdsa_p256.verify(memoryview(pk), bytearray(msg), bytearray(sig)))
    d = hashlib.sha256(msg).digest()
    mptest.true(ecdsa_p256.verify_digest(memoryview(pk), bytearray(d), memoryview(sig)))
