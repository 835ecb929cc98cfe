# mptest: prep=tests.prep.images:make
# SHA-512 (firmware/ota/sha512.py) against digests computed by CPython's hashlib.
import struct
import mptest
from firmware.ota.sha512 import sha512

ABC = ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
       "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
EMPTY = ("cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
         "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")


def _records():
    out = []
    with open(mptest.data_path("sha512.bin"), "rb") as f:
        while True:
            h = f.read(4)
            if not h:
                break
            n = struct.unpack("<I", h)[0]
            out.append((f.read(n), f.read(64)))
    return out


def test_known_digests():
    mptest.eq(sha512(b"abc").hexdigest(), ABC)
    mptest.eq(sha512().hexdigest(), EMPTY)
    mptest.eq(sha512(b"").digest(), bytes.fromhex(EMPTY))


def test_against_cpython_hashlib():
    recs = _records()
    mptest.true(len(recs) >= 20, "records", len(recs))
    for data, want in recs:
        mptest.eq(sha512(data).digest(), want, "len", len(data))


def test_updates_at_odd_boundaries():
    sizes = (1, 2, 3, 5, 7, 13, 111, 112, 113, 127, 128, 129, 250, 255, 256, 257)
    for data, want in _records():
        if len(data) < 200:
            continue
        for start in range(4):
            h = sha512()
            i = 0
            j = start
            while i < len(data):
                n = sizes[j % len(sizes)]
                h.update(data[i:i + n])
                i += n
                j += 1
            mptest.eq(h.digest(), want, "len", len(data), "start", start)


def test_accepts_bytearray_and_memoryview():
    data, want = _records()[-2]
    h = sha512(bytearray(data[:100]))
    h.update(memoryview(data)[100:])
    mptest.eq(h.digest(), want)


def test_digest_can_be_taken_twice_and_update_continue():
    h = sha512(b"ab")
    d1 = h.digest()
    mptest.eq(h.digest(), d1)
    mptest.eq(d1, sha512(b"ab").digest())
    h.update(b"c")
    mptest.eq(h.hexdigest(), ABC)

