# mptest: prep=tests.prep.bundles:make
# Device-side bundle reader/unpacker (firmware/ota/bundle.py): round trips,
# hostile bundles, nothing written outside the destination.
import os
import json
import mptest
from firmware.ota import bundle
from firmware.hal import simflash

_T = None


def setup():
    global _T
    _T = simflash.tmpdir("evbundle")


def teardown():
    simflash.rmtree(_T)


def _read_all(p):
    with open(p, "rb") as f:
        return f.read()


def _listing(top, rel=""):
    out = []
    for ent in os.ilistdir(top):
        p = rel + ent[0]
        if ent[1] == 0x4000:
            out.append(p + "/")
            out += _listing(top + "/" + ent[0], p + "/")
        else:
            out.append(p)
    return sorted(out)


def _size(p):
    return os.stat(p)[6]


def _unpack(path, dest, offset=0, size=None, board=None):
    if size is None:
        size = _size(path) - offset
    os.mkdir(dest)
    with open(path, "rb") as f:
        f.seek(offset)
        r = bundle.Reader(f, size, bytearray(512), board)
        n = r.check()
        got = bundle.unpack(r, dest)
    return r, n, got


def _same_tree(dest, src):
    names = _listing(dest)
    mptest.eq(names, _listing(src))
    for n in names:
        if not n.endswith("/"):
            mptest.true(_read_all(dest + "/" + n) == _read_all(src + "/" + n), "content of", n)
    return names


def test_roundtrip_compressed():
    r, n, got = _unpack(mptest.data_path("v2.evb"), _T + "/out")
    mptest.eq((n, got, r.version, r.count), (5, 5, "2.0.0", 5))
    names = _same_tree(_T + "/out/firmware", mptest.data_path("src_v2/firmware"))
    mptest.true("empty.txt" in names and "util/helpers.py" in names)


def test_roundtrip_stored():
    r, n, got = _unpack(mptest.data_path("v2_raw.evb"), _T + "/out")
    mptest.eq(got, 5)
    _same_tree(_T + "/out/firmware", mptest.data_path("src_v2_raw/firmware"))


def test_payload_inside_an_image():
    off, size = json.loads(_read_all(mptest.data_path("images.json")))["v2.img"]
    r, n, got = _unpack(mptest.data_path("v2.img"), _T + "/out", off, size)
    mptest.eq(got, 5)
    _same_tree(_T + "/out/firmware", mptest.data_path("src_v2/firmware"))
    # the same payload with its size one byte too long (TLV byte included) is refused
    with open(mptest.data_path("v2.img"), "rb") as f:
        f.seek(off)
        e = mptest.raises(bundle.BundleError, lambda: bundle.Reader(f, size + 1).check())
    mptest.true("trailing" in str(e), e)


def test_board_check():
    p = mptest.data_path("v2_esp32.evb")
    with open(p, "rb") as f:
        e = mptest.raises(bundle.BundleError, bundle.Reader, f, _size(p), None, "rp2")
        mptest.true("wrong board" in str(e), e)
        f.seek(0)
        mptest.eq(bundle.Reader(f, _size(p), None, "esp32").meta["board"], "esp32")


def test_buffer_too_small_is_refused():
    p = mptest.data_path("v2.evb")
    with open(p, "rb") as f:
        mptest.raises(ValueError, bundle.Reader, f, _size(p), bytearray(100))


def test_check_path_table():
    good = ["firmware/a.py", "a", "firmware/x-y_z.1.mpy", "a/b/c/d/e/f/g/h"]
    bad = ["", "/a", "a/", "a//b", "../a", "a/../b", "./a", "a/.", "a\\b", "c:a", "a b",
           "x" * 101, "a/b/c/d/e/f/g/h/i", "MANIFEST", "MANIFEST.tmp", "a\x00b", "\u00e9"]
    for p in good:
        mptest.eq(bundle.check_path(p), p.split("/"))
    for p in bad:
        mptest.raises(bundle.BundleError, bundle.check_path, p)


def test_hostile_bundles_rejected_nothing_outside():
    table = json.loads(_read_all(mptest.data_path("hostile.json")))
    mptest.true(len(table) >= 30, "cases", len(table))
    sentinel = _T + "/sentinel.txt"
    with open(sentinel, "w") as f:
        f.write("keep")
    seen = 0
    for name in sorted(table):
        case = table[name]
        phase, text = case[0], case[1]
        p = mptest.data_path("hostile_%s.evb" % name)
        size = case[2] if len(case) > 2 else _size(p)
        dest = _T + "/slot_" + name
        os.mkdir(dest)
        before = _listing(_T)
        failed_in = None
        with open(p, "rb") as f:
            try:
                r = bundle.Reader(f, size, bytearray(512))
                r.check()
                failed_in = "copy"
                bundle.unpack(r, dest)
                failed_in = None
            except bundle.BundleError as e:
                if failed_in is None:
                    failed_in = "check"
                mptest.true(text in str(e), name, "error:", e, "want", text)
        mptest.eq(failed_in, phase, name)
        after = _listing(_T)
        extra = [x for x in after if x not in before and not x.startswith("slot_%s/" % name)]
        mptest.eq(extra, [], name)
        if phase == "check":  # a structural error writes nothing at all
            mptest.eq(_listing(dest), [], name)
        else:  # the failing file was removed again
            mptest.true(all(x.endswith("/") or x.endswith("__init__.py") for x in _listing(dest)),
                        name, _listing(dest))
        seen += 1
    mptest.eq(_read_all(sentinel), b"keep")
    mptest.eq(seen, len(table))


def test_huge_claims_fail_without_allocating():
    # a 4 GB file size, a 2 GB stored size and a 64 KB meta length are
    # refused with BundleError (a MemoryError would show an allocation)
    for name in ("oversize_claim", "stored_past_end", "huge_meta", "huge_path_len"):
        p = mptest.data_path("hostile_%s.evb" % name)
        with open(p, "rb") as f:
            mptest.raises(bundle.BundleError, lambda: bundle.Reader(f, _size(p)).check())


def test_builder_refusals_on_host():
    res = json.loads(_read_all(mptest.data_path("host_checks.json")))
    for k in ("include_dotdot", "include_abs", "symlink_outside", "bad_name"):
        mptest.true(res[k].startswith("rejected"), k, res[k])
    mptest.eq(res["good"], "accepted")
    mptest.eq(res["good_roundtrip"], True)
