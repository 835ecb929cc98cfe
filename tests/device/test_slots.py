# mptest: heapsize=112K prep=tests.prep.bundles:make
# Heap: compiling boot.py (source, as on a board) with its ROMFS hook beside
# this module peaks above 96K on mp64 (smallest passing there: 104K).
# A/B slots (firmware/ota/slots.py): install, manifest, verify, wipe, heap.
import os
import gc
import json
import mptest
import boot
from firmware.ota import slots, bundle
from firmware.hal import simflash

R = None  # device root of the test (a host directory, like '/flash/' on a board)


def setup():
    global R
    R = simflash.tmpdir("evslots") + "/"


def teardown():
    simflash.rmtree(R[:-1])


def _size(p):
    return os.stat(p)[6]


def _inst(slot, name):
    p = mptest.data_path(name + ".evb")
    return slots.install(slot, p, 0, _size(p), R)


def _listing(top, rel=""):
    out = []
    for ent in os.ilistdir(top):
        p = rel + ent[0]
        if ent[1] == 0x4000:
            out += _listing(top + "/" + ent[0], p + "/")
        else:
            out.append(p)
    return sorted(out)


def test_install_from_image_and_verify():
    off, size = json.loads(open(mptest.data_path("images.json")).read())["v2.img"]
    m = slots.install("b", mptest.data_path("v2.img"), off, size, R)
    mptest.eq((m["version"], m["count"], m["size"]), ("2.0.0", 5, 6490))
    mptest.true(slots.verify_slot("b", R))
    man = boot.read_manifest("b", R)
    mptest.eq(sorted(man["files"]), ["firmware/__init__.py", "firmware/agent.py", "firmware/data.bin",
                                     "firmware/empty.txt", "firmware/util/helpers.py"])
    mptest.eq(man["files"]["firmware/empty.txt"],
              [0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
    mptest.eq((man["version"], man["count"]), ("2.0.0", 5))
    mptest.eq(_listing(R + "slots/b"), ["MANIFEST"] + sorted(man["files"]))


def test_install_refuses_the_active_slot():
    _inst("a", "v1")
    boot.write_record(boot.Record("a"), R)
    e = mptest.raises(slots.SlotError, _inst, "a", "v2")
    mptest.true("active" in str(e))
    mptest.eq(boot.read_manifest("a", R)["version"], "1.0.0")
    mptest.raises(slots.SlotError, slots.install, "c", mptest.data_path("v2.evb"), 0, 10, R)


def test_structural_error_leaves_slot_untouched():
    _inst("a", "v1")
    _inst("b", "v1")
    boot.write_record(boot.Record("a"), R)
    for name in ("dotdot", "oversize_claim", "trailing_data", "duplicate"):
        mptest.raises(bundle.BundleError, _inst, "b", "hostile_" + name)
        mptest.true(slots.verify_slot("b", R), name)
    mptest.eq(sorted(os.listdir(R)), ["bootrec.0", "slots"])
    mptest.eq(sorted(os.listdir(R + "slots")), ["a", "b"])


def test_content_error_leaves_slot_unbootable():
    _inst("a", "v1")
    _inst("b", "v1")
    boot.write_record(boot.Record("a"), R)
    mptest.raises(bundle.BundleError, _inst, "b", "hostile_bad_sha")
    mptest.true(not slots.verify_slot("b", R))
    mptest.eq(boot.read_manifest("b", R), None)
    slot, info = boot.select(R)
    mptest.eq((slot, info["reason"]), ("a", None))


def test_install_clears_a_stale_pending_record():
    _inst("a", "v1")
    _inst("b", "v2")
    boot.write_record(boot.Record("a"), R)
    boot.set_pending("b", sec_counter=5, root=R)
    m = _inst("b", "v3")
    rec = boot.read_record(R)
    mptest.eq((rec.pending, rec.pending_sec, rec.reason, m["version"]), (None, None, None, "3.0.0"))


def test_inactive_and_paths():
    mptest.eq(slots.inactive(R), "b")  # blank: default record, active a
    _inst("b", "v2")
    mptest.eq(slots.inactive(R), "a")  # only b verifies: default active is b
    mptest.eq(slots.staging_path("a", "/flash"), "/flash/slots/a.img")
    mptest.eq(slots.staging_path("b"), "/slots/b.img")
    mptest.eq(slots.slot_dir("a", "/flash/"), "/flash/slots/a")
    mptest.raises(slots.SlotError, slots.staging_path, "../x")
    # the staging file lives beside the slot and survives its wipe
    with open(slots.staging_path("a", R), "wb") as f:
        f.write(b"img")
    slots.wipe("a", R)
    mptest.eq(sorted(os.listdir(R + "slots")), ["a", "a.img", "b"])
    mptest.eq(os.listdir(R + "slots/a"), [])


def _break(kind):
    d = R + "slots/b/"
    if kind == "modified":
        with open(d + "firmware/agent.py", "ab") as f:
            f.write(b"#")
    elif kind == "same_size_modified":
        with open(d + "firmware/data.bin", "r+b") as f:
            f.seek(10)
            c = f.read(1)
            f.seek(10)
            f.write(bytes([c[0] ^ 1]))
    elif kind == "missing":
        os.remove(d + "firmware/util/helpers.py")
    elif kind == "extra":
        with open(d + "firmware/evil.py", "w") as f:
            f.write("x = 1\n")
    elif kind == "extra_manifest_tmp":
        with open(d + "MANIFEST.tmp", "w") as f:
            f.write("{}")
    elif kind == "no_manifest":
        os.remove(d + "MANIFEST")
    elif kind in ("garbled_manifest", "truncated_manifest", "manifest_not_dict"):
        with open(d + "MANIFEST") as f:
            m = f.read()
        with open(d + "MANIFEST", "w") as f:
            f.write({"garbled_manifest": m.replace('"', "'", 3),
                     "truncated_manifest": m[:len(m) // 2],
                     "manifest_not_dict": "[1, 2]"}[kind])
    elif kind == "manifest_lies_size":
        m = boot.read_manifest("b", R)
        m["files"]["firmware/agent.py"][0] += 1
        with open(d + "MANIFEST", "w") as f:
            f.write(json.dumps(m))
    elif kind == "manifest_escapes":
        m = boot.read_manifest("b", R)
        m["files"]["../../bootrec.0"] = [1, "00"]
        with open(d + "MANIFEST", "w") as f:
            f.write(json.dumps(m))
    elif kind == "file_became_dir":
        os.remove(d + "firmware/empty.txt")
        os.mkdir(d + "firmware/empty.txt")
    else:
        raise ValueError(kind)


_KINDS = ("modified", "same_size_modified", "missing", "extra", "extra_manifest_tmp", "no_manifest",
          "garbled_manifest", "truncated_manifest", "manifest_not_dict", "manifest_lies_size",
          "manifest_escapes", "file_became_dir")


def test_manifest_mismatch_detection():
    for kind in _KINDS:
        if "slots" in os.listdir(R[:-1]):
            simflash.rmtree(R + "slots")
        _inst("b", "v2")
        ok, why, _ = boot.check_slot("b", R)
        mptest.true(ok, "fresh install before", kind, why)
        _break(kind)
        ok, why, _ = boot.check_slot("b", R)
        mptest.true(not ok, kind)
        mptest.true(why, kind)
        mptest.eq(slots.verify_slot("b", R), False, kind)


def test_empty_directories_are_tolerated():
    _inst("b", "v2")
    os.mkdir(R + "slots/b/firmware/newdir")
    mptest.true(slots.verify_slot("b", R))


def test_seal_for_mpremote_deploys():
    simflash.copy_file  # (module import check)
    os.mkdir(R + "slots")
    os.mkdir(R + "slots/a")
    os.mkdir(R + "slots/a/firmware")
    with open(R + "slots/a/firmware/__init__.py", "w") as f:
        f.write("")
    with open(R + "slots/a/firmware/agent.py", "w") as f:
        f.write("def run(i):\n    pass\n")
    h = slots.seal("a", "0.9.0", R)
    mptest.eq((h["count"], h["version"]), (2, "0.9.0"))
    mptest.true(slots.verify_slot("a", R))
    mptest.eq(boot.read_record(R).active, "a")


class _Probe:
    """Destination file that samples the live heap (after a collection) at
    every write of the install: the install's working set while streaming."""
    peak = 0

    def __init__(self, path, mode):
        self.f = open(path, mode)

    def write(self, b):
        gc.collect()
        a = gc.mem_alloc()
        if a > _Probe.peak:
            _Probe.peak = a
        return self.f.write(b)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_install_heap_does_not_grow_with_size():
    # 16 KiB and 256 KiB of content (the latter cannot even be held in this
    # heap): the live heap above idle while streaming stays under 16 KB and
    # is the same for both sizes.
    boot.write_record(boot.Record("a"), R)
    p0 = mptest.data_path("mem_small.evb")
    slots.install("b", p0, 0, _size(p0), R)  # warm up (first-use allocations)
    peaks = []
    bundle.open = _Probe
    try:
        for name, want in (("mem_small", 16 * 1024), ("mem_big", 256 * 1024)):
            p = mptest.data_path(name + ".evb")
            gc.collect()
            idle = gc.mem_alloc()
            _Probe.peak = idle
            m = slots.install("b", p, 0, _size(p), R)
            mptest.true(m["size"] > want, name, m["size"])
            peaks.append(_Probe.peak - idle)
            print("%s: %d bytes installed, live heap above idle %d bytes" % (name, m["size"], peaks[-1]))
    finally:
        del bundle.open
    mptest.true(slots.verify_slot("b", R))
    mptest.true(0 < peaks[0] < 16 * 1024 and 0 < peaks[1] < 16 * 1024, peaks)
    # 16x the content, at most one deflate window + decompressor state (3.5 KB)
    # apart: where the freed deflate reserve lands decides whether the window
    # reuses it, and that shifts with the heap layout (even the length of the
    # test directory's path), not with the size
    mptest.true(abs(peaks[1] - peaks[0]) <= 3584, "grows with size", peaks)


# ---- refusals before the wipe: versions that disagree, free space (issue 13.7, 10 §3) ----

def test_bundle_version_must_match_the_signed_header_version():
    _inst("a", "v1")
    _inst("b", "v1")
    boot.write_record(boot.Record("a"), R)
    p = mptest.data_path("v2.evb")
    e = mptest.raises(slots.SlotError, slots.install, "b", p, 0, _size(p), R, None, "2.5.0")
    mptest.true("version mismatch" in str(e), e)
    mptest.true(slots.verify_slot("b", R))                 # not wiped
    mptest.eq(boot.read_manifest("b", R)["version"], "1.0.0")
    mptest.eq(slots.install("b", p, 0, _size(p), R, None, "2.0.0")["version"], "2.0.0")


def test_bundle_that_does_not_fit_is_refused_before_the_wipe():
    # a small real LittleFS (64 KiB): the 256 KiB bundle content cannot fit
    dev = simflash.FileBlockDevice(R + "small.bin", 512, 128, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, "/small")
    try:
        r = "/small/"
        boot.write_record(boot.Record("b"), r)
        slots.install("a", mptest.data_path("v1.evb"), 0, _size(mptest.data_path("v1.evb")), r)
        boot.write_record(boot.Record("a"), r)
        slots.install("b", mptest.data_path("v1.evb"), 0, _size(mptest.data_path("v1.evb")), r)
        p = R + "big.evb"
        simflash.copy_file(mptest.data_path("mem_big.evb"), p)
        free = slots.free_bytes(r)
        e = mptest.raises(slots.SlotError, slots.install, "b", p, 0, _size(p), r)
        mptest.true("no space" in str(e), e)
        mptest.true(slots.verify_slot("b", r), "slot b not wiped")
        mptest.eq(slots.free_bytes(r), free)
        # the reserve counts too: a bundle that fits only without it is refused
        p1 = mptest.data_path("v1.evb")
        e = mptest.raises(slots.SlotError, slots.install, "b", p1, 0, _size(p1), r, None, None, free)
        mptest.true("reserve" in str(e) and slots.verify_slot("b", r), e)
    finally:
        simflash.umount("/small")
        dev.close()
