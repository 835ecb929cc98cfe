# mptest: prep=tests.prep.images:make
# MCUboot image verification (firmware/ota/image.py) on images signed by
# `imgtool sign` and hand-made hostile ones (tests/prep/images.py).
import gc

# Allocated first, while the heap is not yet fragmented by the imports below
# (from source, they leave no 4 KiB hole in a 96K heap).
_BUF = bytearray(4096)

import hashlib
import json
import os
import struct
import mptest
from firmware.ota import image
from firmware.ota.image import ImageError

_keys = None
_man = None


def keys():
    global _keys
    if _keys is None:
        with open(mptest.data_path("keys.bin"), "rb") as f:
            b = f.read()
        _keys = [b[0:32], b[32:64], b[64:96]]
    return _keys


def manifest():
    global _man
    if _man is None:
        with open(mptest.data_path("images.json")) as f:
            _man = json.load(f)
    return _man


def read(name, start=0, n=-1):
    # small pieces only: whole images do not fit in the fragmented test heap
    with open(mptest.data_path(name), "rb") as f:
        f.seek(start)
        return f.read(n)


def size(name):
    return os.stat(mptest.data_path(name))[6]


def layout(name):
    """(header size, payload size, protected TLV size, start of unprotected area)."""
    hsz, psz, isz = struct.unpack_from("<HHI", read(name, 0, 32), 8)
    return hsz, isz, psz, hsz + isz + psz


class Cut:
    # a stream that ends after `limit` bytes of a file
    def __init__(self, name, limit):
        self.f = open(mptest.data_path(name), "rb")
        self.left = limit

    def readinto(self, buf):
        n = min(len(buf), self.left)
        if n <= 0:
            return 0
        n = self.f.readinto(memoryview(buf)[:n])
        self.left -= n
        return n


def feed_file(v, name, n, limit=None):
    mv = memoryview(_BUF)[:n]
    with open(mptest.data_path(name), "rb") as f:
        left = size(name) if limit is None else limit
        while left > 0:
            k = f.readinto(mv[:min(n, left)])
            if not k:
                break
            v.feed(mv[:k])
            left -= k
    return v


def check_info(info, want, *ctx):
    mptest.eq(info.version, tuple(want["version"]), ctx, "version")
    mptest.eq(info.security_counter, want["security_counter"], ctx, "security_counter")
    mptest.eq(info.payload_size, want["payload_size"], ctx, "payload_size")
    mptest.eq(info.header_size, want["header_size"], ctx, "header_size")
    mptest.eq(info.board, want["board"], ctx, "board")
    mptest.eq(info.key_index, want["key_index"], ctx, "key_index")


def feed_chunks(name, n, trusted=None, board=None):
    return feed_file(image.Verifier(trusted or keys()[:1], board), name, n).finish()


def test_every_fixture_case():
    man = manifest()
    mptest.true(len(man) >= 40, "cases", len(man))
    n_ok = n_err = 0
    for name in sorted(man):
        case = man[name]
        trusted = [keys()[i] for i in case.get("keys", [0])]
        with open(mptest.data_path(case.get("file", name)), "rb") as f:
            if "ok" in case:
                info = image.verify(f, trusted, case.get("board"))
                check_info(info, case["ok"], name)
                n_ok += 1
            else:
                e = mptest.raises(ImageError, image.verify, f, trusted, case.get("board"),
                                  case.get("max_size"))
                mptest.true(case["error"] in str(e), name, "error was:", str(e), "want:", case["error"])
                n_err += 1
    mptest.true(n_ok >= 6 and n_err >= 30, n_ok, n_err)


def test_valid_image_info_in_detail():
    with open(mptest.data_path("valid_board.img"), "rb") as f:
        info = image.verify(f, keys()[:1], board="evse-esp32")
    mptest.eq(info.version, (2, 0, 1, 99))
    mptest.eq(info.security_counter, 3)
    mptest.eq(info.payload_size, 20000)
    mptest.eq(info.header_size, 0x200)
    mptest.eq(info.board, "evse-esp32")
    mptest.eq(info.key_index, 0)
    mptest.eq(info.total_size, size("valid_board.img"))
    hsz, isz, psz, unprot = layout("valid_board.img")
    h = hashlib.sha256()
    for off in range(0, unprot, 1024):
        h.update(read("valid_board.img", off, min(1024, unprot - off)))
    mptest.eq(info.hash, h.digest())
    # the SHA256 TLV (first in the unprotected area) holds the same digest
    mptest.eq(read("valid_board.img", unprot + 4, 4), b"\x10\x00\x20\x00")
    mptest.eq(read("valid_board.img", unprot + 8, 32), info.hash)


def test_board_none_accepts_an_image_with_a_board_tlv():
    info = image.verify(Cut("valid_board.img", 1 << 30), keys()[:1])
    mptest.eq(info.board, "evse-esp32")


def test_feed_in_1_7_and_4096_byte_chunks():
    for name in ("valid_board.img", "valid_full.img", "valid_min.img", "valid_empty.img"):
        want = manifest()[name]["ok"]
        for n in (1, 7, 4096):
            check_info(feed_chunks(name, n), want, name, n)


def test_rotation_second_trusted_key_matches():
    info = feed_chunks("valid_k2.img", 512, [keys()[0], keys()[1]])
    mptest.eq(info.key_index, 1)
    info = feed_chunks("valid_k2.img", 512, [keys()[1]])
    mptest.eq(info.key_index, 0)
    e = mptest.raises(ImageError, feed_chunks, "valid_k2.img", 512, [keys()[0], keys()[2]])
    mptest.true("untrusted" in str(e), str(e))


def test_truncated_at_many_points():
    name = "valid_board.img"
    hsz, isz, psz, unprot = layout(name)
    prot = hsz + isz
    end = size(name)
    cuts = (0, 1, 31, 32, 33, hsz, hsz + 100, prot - 1, prot, prot + 3, prot + psz - 1,
            unprot, unprot + 2, unprot + 4, unprot + 40, end - 64, end - 1)
    for cut in cuts:
        e = mptest.raises(ImageError, image.verify, Cut(name, cut), keys()[:1])
        mptest.true("truncated" in str(e), "cut", cut, str(e))
        # the same through the Verifier, fed in 100-byte pieces
        v = feed_file(image.Verifier(keys()[:1]), name, 100, cut)
        mptest.eq(v.received, cut)
        mptest.true(not v.done)
        e = mptest.raises(ImageError, v.finish)
        mptest.true("truncated" in str(e), "cut", cut, str(e))


def test_errors_are_raised_as_early_as_possible():
    hdr = read("bad_magic.img", 0, 32)
    v = image.Verifier(keys()[:1])
    v.feed(hdr[:31])
    e = mptest.raises(ImageError, v.feed, hdr[31:32])
    mptest.true("magic" in str(e), str(e))
    # hostile sizes: rejected at byte 32, before any payload
    v = image.Verifier(keys()[:1])
    e = mptest.raises(ImageError, v.feed, read("hostile_overflow.img", 0, 32))
    mptest.true("overflow" in str(e), str(e))
    # a tampered payload: everything up to the last byte is accepted, the last
    # byte (completing the TLV area) gives the reason
    name = "tampered_payload.img"
    v = feed_file(image.Verifier(keys()[:1]), name, 4096, size(name) - 1)
    e = mptest.raises(ImageError, v.feed, read(name, size(name) - 1, 1))
    mptest.true("hash mismatch" in str(e), str(e))
    # data beyond the declared end is refused by feed itself
    v = feed_file(image.Verifier(keys()[:1]), "valid_min.img", 4096)
    mptest.true(v.done)
    e = mptest.raises(ImageError, v.feed, b"\x00")
    mptest.true("beyond the end" in str(e), str(e))


def test_expected_size_narrows_to_the_exact_size():
    name = "valid_board.img"
    hsz, isz, psz, unprot = layout(name)
    v = image.Verifier(keys()[:1])
    mptest.eq(v.expected_size(), 32)
    feed_file(v, name, 512, 32)
    bound = v.expected_size()
    mptest.eq(bound, unprot + 1024)
    mptest.true(bound >= size(name))
    v2 = feed_file(image.Verifier(keys()[:1]), name, 512, unprot + 3)
    mptest.eq(v2.expected_size(), bound)
    v2.feed(read(name, unprot + 3, 1))
    mptest.eq(v2.expected_size(), size(name))
    v2.feed(read(name, unprot + 4))
    mptest.eq(v2.received, size(name))
    mptest.eq(v2.finish().total_size, size(name))


def test_an_error_sticks():
    v = image.Verifier(keys()[:1])
    e1 = mptest.raises(ImageError, feed_file, v, "tampered_sig.img", 4096)
    e2 = mptest.raises(ImageError, v.feed, b"")
    e3 = mptest.raises(ImageError, v.finish)
    mptest.true(e1 is e2 and e2 is e3)
    mptest.true("bad signature" in str(e1), str(e1))


def test_hostile_sizes_do_not_allocate():
    # the header claims a 2 GiB payload: hashed as it comes, never buffered
    gc.collect()
    before = gc.mem_free()
    e = mptest.raises(ImageError, image.verify, Cut("hostile_huge_payload.img", 1 << 30), keys()[:1])
    mptest.true("truncated" in str(e), str(e))
    gc.collect()
    mptest.true(abs(gc.mem_free() - before) < 2048, "heap", before, gc.mem_free())
    # a TLV area that claims 64 KiB is refused, not buffered
    e = mptest.raises(ImageError, image.verify, Cut("hostile_unprot_huge.img", 1 << 30), keys()[:1])
    mptest.true("out of range" in str(e), str(e))


def test_parse_header():
    hdr = read("valid_full.img", 0, 32)
    h = image.parse_header(hdr)
    mptest.eq(h.hdr_size, 0x200)
    mptest.eq(h.img_size, 3000)
    mptest.eq(h.version, (0, 9, 65535, 4294967295))
    mptest.eq(h.flags, 0)
    mptest.true(h.protect_tlv_size > 4)
    mptest.raises(ImageError, image.parse_header, hdr[:31])
    mptest.raises(ImageError, image.parse_header, b"\x00" * 32)
    e = mptest.raises(ImageError, image.parse_header, read("encrypted.img", 0, 32))
    mptest.true("encrypted (AES-128)" in str(e), str(e))


def test_bad_trusted_keys_and_arguments():
    for bad in ([], [b"short"], [None], [keys()[0], b"x" * 33], keys()[0], None, 5):
        mptest.raises(ImageError, image.Verifier, bad)
    mptest.raises(ImageError, image.Verifier, keys()[:1], 5)
    # bytearray / memoryview keys are fine
    info = feed_chunks("valid_min.img", 4096, [bytearray(keys()[0])])
    mptest.eq(info.key_index, 0)


class _ReadOnly:
    # a stream without readinto()
    def __init__(self, name):
        self.f = open(mptest.data_path(name), "rb")

    def read(self, n):
        return self.f.read(n)


def test_verify_streams_without_readinto():
    info = image.verify(_ReadOnly("valid_min.img"), keys()[:1])
    mptest.eq(info.version, (1, 2, 3, 4))
