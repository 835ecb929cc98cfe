# mptest: prep=tests.prep.images:make
# Ed25519 verification (firmware/ota/ed25519.py): RFC 8032 vectors, signatures
# made by the `cryptography` package, mutations and malformed input.
import struct
import mptest
from firmware.ota import ed25519

# RFC 8032 7.1 TEST 1 inline, so that one vector runs without host data.
T1_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
T1_SIG = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
                       "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19


def _records(name):
    # streamed one record at a time: the whole file does not fit in the heap
    with open(mptest.data_path(name), "rb") as f:
        while True:
            h = f.read(2)
            if not h:
                break
            n = struct.unpack("<H", h)[0]
            pk = f.read(32)
            sig = f.read(64)
            yield pk, f.read(n), sig


class _Rand:
    # small deterministic LCG: the same mutations on every run
    def __init__(self, seed):
        self.s = seed

    def below(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s % n


def _flip(b, bit):
    b = bytearray(b)
    b[bit >> 3] ^= 1 << (bit & 7)
    return bytes(b)


def test_rfc8032_test1_inline():
    mptest.true(ed25519.verify(T1_PK, b"", T1_SIG))
    mptest.true(not ed25519.verify(T1_PK, b"\x00", T1_SIG))


def test_rfc8032_vectors():
    recs = list(_records("rfc8032.bin"))
    mptest.eq(len(recs), 5)
    mptest.eq(len(recs[3][1]), 1023, "TEST 1024 message length")
    mptest.eq(len(recs[4][1]), 64, "TEST SHA(abc) message length")
    for i, (pk, msg, sig) in enumerate(recs):
        mptest.true(ed25519.verify(pk, msg, sig), "vector", i)
        mptest.true(not ed25519.verify(pk, msg + b"\x00", sig), "vector", i, "longer message")


def test_cryptography_signatures_verify():
    n = 0
    for i, (pk, msg, sig) in enumerate(_records("sigs.bin")):
        mptest.true(ed25519.verify(pk, msg, sig), "record", i, "msg len", len(msg))
        n += 1
    mptest.true(n >= 200, "records", n)


def test_mutated_signatures_fail():
    rnd = _Rand(25519)
    for i, (pk, msg, sig) in enumerate(_records("sigs.bin")):
        what = i % 4
        if what == 0 or what == 1:
            bad = _flip(sig, rnd.below(512))
            mptest.true(not ed25519.verify(pk, msg, bad), "record", i, "sig bit")
        elif what == 2 and msg:
            bad = _flip(msg, rnd.below(len(msg) * 8))
            mptest.true(not ed25519.verify(pk, bad, sig), "record", i, "msg bit")
        else:
            bad = _flip(pk, rnd.below(256))
            mptest.true(not ed25519.verify(bad, msg, sig), "record", i, "key bit")


def test_signature_of_another_key_fails():
    prev = None
    for i, rec in enumerate(_records("sigs.bin")):
        if prev is not None:
            _, msg, sig = prev
            mptest.true(not ed25519.verify(rec[0], msg, sig), "record", i - 1)
        prev = rec
        if i == 40:
            break


def test_edge_cases_noncanonical_and_s_range():
    n = 0
    with open(mptest.data_path("weird.bin"), "rb") as f:
        while True:
            h = f.read(2)
            if not h:
                break
            ok, ll = h[0], h[1]
            label = f.read(ll).decode()
            m = struct.unpack("<H", f.read(2))[0]
            pk = f.read(32)
            sig = f.read(64)
            msg = f.read(m)
            mptest.eq(ed25519.verify(pk, msg, sig), bool(ok), label)
            n += 1
    mptest.true(n >= 9, "cases", n)


def test_s_plus_l_rejected_rfc_vector():
    s = int.from_bytes(T1_SIG[32:], "little")
    bad = T1_SIG[:32] + (s + L).to_bytes(32, "little")
    mptest.true(not ed25519.verify(T1_PK, b"", bad))
    # S = L - 1 is in range but wrong; S with the top bits set is out of range
    mptest.true(not ed25519.verify(T1_PK, b"", T1_SIG[:32] + (L - 1).to_bytes(32, "little")))
    mptest.true(not ed25519.verify(T1_PK, b"", T1_SIG[:32] + b"\xff" * 32))


def test_strict_point_decoding():
    mptest.true(ed25519._decode((P + 1).to_bytes(32, "little")) is None, "y = p + 1")
    mptest.true(ed25519._decode(P.to_bytes(32, "little")) is None, "y = p")
    mptest.true(ed25519._decode((1 | 1 << 255).to_bytes(32, "little")) is None, "-0")
    mptest.eq(ed25519._decode((1).to_bytes(32, "little")), (0, 1), "identity")
    mptest.true(ed25519._decode((2).to_bytes(32, "little")) is None, "y=2 not on the curve")
    x, y = ed25519._decode(T1_PK)
    d = 37095705934669439343138083508754565189542113879843219016388785533085940283555
    mptest.eq((-x * x + y * y - 1 - d * x * x * y * y) % P, 0, "decoded point on the curve")
    mptest.eq(x & 1, T1_PK[31] >> 7, "sign bit")


def test_garbage_returns_false_without_raising():
    good = (T1_PK, b"", T1_SIG)
    cases = [
        (None, b"", T1_SIG), (T1_PK, b"", None), (T1_PK, None, T1_SIG),
        (T1_PK[:31], b"", T1_SIG), (T1_PK + b"\x00", b"", T1_SIG),
        (T1_PK, b"", T1_SIG[:63]), (T1_PK, b"", T1_SIG + b"\x00"),
        (T1_PK, b"", b""), (b"", b"", b""), (32, b"", 64), (T1_PK, "", T1_SIG),
        (T1_PK.hex(), b"", T1_SIG), (T1_PK, b"", T1_SIG.hex()), (list(T1_PK), b"", T1_SIG),
        (T1_PK, 0, T1_SIG), (T1_PK, [], T1_SIG), (b"\xff" * 32, b"", T1_SIG),
        (bytes(32), b"", bytes(64)), (T1_PK, b"", bytes(64)), (b"\xff" * 32, b"", b"\xff" * 64),
    ]
    for i, (pk, msg, sig) in enumerate(cases):
        r = ed25519.verify(pk, msg, sig)
        mptest.true(r is False, "case", i, "returned", r)
    mptest.true(ed25519.verify(*good) is True)


def test_accepts_bytearray_and_memoryview():
    mptest.true(ed25519.verify(bytearray(T1_PK), memoryview(b""), memoryview(T1_SIG)))
    pk, msg, sig = list(_records("rfc8032.bin"))[2]
    mptest.true(ed25519.verify(memoryview(pk), bytearray(msg), bytearray(sig)))


def test_out_of_heap_is_a_memory_error_not_a_bad_signature():
    import micropython
    ed25519.verify(T1_PK, b"", T1_SIG)   # base table built: the next call allocates only temporaries
    got = [None]
    micropython.heap_lock()
    try:
        got[0] = ed25519.verify(T1_PK, b"", T1_SIG)
    except MemoryError:
        got[0] = MemoryError
    finally:
        micropython.heap_unlock()
    mptest.true(got[0] is MemoryError, "verify with no heap returned", got[0])
    mptest.true(ed25519.verify(T1_PK, b"", T1_SIG), "valid again with heap")


def test_image_check_retries_after_memory_error_and_never_says_bad_signature():
    # image.py: one MemoryError in the signature check is collected and retried;
    # a persistent one reaches the caller as MemoryError, never as ImageError
    from firmware.ota import image
    with open(mptest.data_path("keys.bin"), "rb") as f:
        k1 = f.read(32)
    real = image.ed25519.verify
    calls = []

    def flaky(fail):
        def v(pk, msg, sig):
            calls.append(1)
            if len(calls) <= fail:
                raise MemoryError("test: heap exhausted")
            return real(pk, msg, sig)
        return v

    class _Ed:
        pass
    fake = _Ed()
    image.ed25519 = fake
    try:
        fake.verify = flaky(1)
        with open(mptest.data_path("valid_min.img"), "rb") as f:
            info = image.verify(f, [k1])
        mptest.eq(len(calls), 2, "retried once")
        mptest.eq(info.key_index, 0)
        del calls[:]
        fake.verify = flaky(99)
        with open(mptest.data_path("valid_min.img"), "rb") as f:
            mptest.raises(MemoryError, image.verify, f, [k1])
        mptest.eq(len(calls), 2)
    finally:
        image.ed25519 = __import__("firmware.ota.ed25519").ota.ed25519
