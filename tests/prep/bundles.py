"""Host-side (CPython) generator of bundles for the slot/boot device tests.

`make(dir)` writes (read on the device through mptest.data_path):
  v1.evb, v2.evb, v2_raw.evb     fake firmware packages (agent.py logs each run)
  crash.evb, noimport.evb        agent whose run() raises / whose import fails
  pc1.evb, pc2.evb               tiny packages for the power-cut campaign
  mem_small.evb, mem_big.evb     16 KiB / 256 KiB of content for the heap check
  v2.img + images.json           v2.evb wrapped between a fake header and TLVs
  hostile_<name>.evb + hostile.json {name: [phase, expected error text]}
  host_checks.json               outcome of the builder's own refusals (host side)
"""
import json
import os
import random
import struct

from tools import bundle as B

AGENT = '''VERSION = %r
MODE = %r


def run(info):
    with open(info["root"] + "runlog", "a") as f:
        f.write("%%s %%s %%s %%s\\n" %% (VERSION, info["slot"], info["trial"], info["reason"]))
    if MODE == "crash":
        raise RuntimeError("agent crashed")
'''


def _tree(d, version, mode="ok", extra=b"", helper_kb=3, rnd=None):
    rnd = rnd or random.Random(version)
    fw = os.path.join(d, "firmware")
    os.makedirs(os.path.join(fw, "util"), exist_ok=True)
    with open(os.path.join(fw, "__init__.py"), "w") as f:
        f.write("# fake firmware %s\n" % version)
    with open(os.path.join(fw, "agent.py"), "w") as f:
        if mode == "noimport":
            f.write("import no_such_module_xyz\n")
        else:
            f.write(AGENT % (version, mode))
    with open(os.path.join(fw, "util", "helpers.py"), "w") as f:
        for i in range(helper_kb * 40):
            f.write("X%d = %d  # some compressible text for %s\n" % (i, i * 7, version))
    with open(os.path.join(fw, "data.bin"), "wb") as f:
        f.write(bytes(rnd.getrandbits(8) for _ in range(700)) + extra)
    open(os.path.join(fw, "empty.txt"), "w").close()


def _build(d, name, version, **kw):
    src = os.path.join(d, "src_" + name)
    opts = {k: kw.pop(k) for k in ("mode", "extra", "helper_kb") if k in kw}
    _tree(src, version, **opts)
    return B.build(src, os.path.join(d, name + ".evb"), version, include=["firmware"], **kw)


def _good_entries():
    return [("firmware/__init__.py", b"# x\n"), ("firmware/agent.py", b"def run(i):\n    pass\n")]


def _hostile(d):
    w = B.entry_bytes
    sha0 = B.hashlib.sha256(b"").digest()
    meta = lambda n, size, **kw: dict({"version": "9.9.9", "board": None, "mpy": None,
                                       "files": n, "size": size, "wbits": 10}, **kw)
    good = b"".join(w(p, c) for p, c in _good_entries())
    gsize = sum(len(c) for _, c in _good_entries())
    z = B.deflate_raw(b"hello " * 200, 10)
    one = lambda path, raw=b"abc": B.header_bytes(meta(1, len(raw))) + w(path, raw)
    cases = {
        "abs_path": ("check", "bad path", one("/etc/passwd")),
        "dotdot": ("check", "bad path", one("firmware/../../x.py")),
        "dotdot_first": ("check", "bad path", one("../x.py")),
        "dot": ("check", "bad path", one("./x.py")),
        "backslash": ("check", "bad character", one("firmware\\..\\x.py")),
        "colon": ("check", "bad character", one("c:x.py")),
        "non_ascii": ("check", "bad character", B.header_bytes(meta(1, 3)) + w("firmware/\u00e9.py".encode(), b"abc")),
        "empty_component": ("check", "bad path", one("firmware//x.py")),
        "empty_name": ("check", "bad path length", one("")),
        "too_deep": ("check", "too deep", one("a/b/c/d/e/f/g/h/i.py")),
        "reserved_manifest": ("check", "reserved", one("MANIFEST")),
        "duplicate": ("check", "duplicate", B.header_bytes(meta(2, 6)) + w("firmware/a.py", b"abc") + w("firmware/a.py", b"abc")),
        "unsorted": ("check", "unsorted", B.header_bytes(meta(2, 6)) + w("firmware/b.py", b"abc") + w("firmware/a.py", b"abc")),
        "file_dir_conflict": ("check", "conflicting", B.header_bytes(meta(2, 6)) + w("firmware", b"abc") + w("firmware/a.py", b"abc")),
        "oversize_claim": ("check", "too large", B.header_bytes(meta(1, 3)) + w("firmware/a.py", b"abc", raw_size=0xFFFFFFFF, stored_size=3)),
        "stored_past_end": ("check", "past the payload", B.header_bytes(meta(1, 3)) + w("firmware/a.py", b"abc", flags=1, stored=b"abc", stored_size=0x7FFFFFFF)),
        "huge_path_len": ("check", "bad path length", B.header_bytes(meta(1, 3)) + w("x" * 255, b"abc")),
        "huge_meta": ("check", "bad meta length", B"EVB1" + struct.pack("<H", 0xFFFF) + b"{}" * 10),
        "bad_meta_json": ("check", "bad meta", B"EVB1" + struct.pack("<H", 5) + b"{nope" + good),
        "meta_not_dict": ("check", "bad meta", B"EVB1" + struct.pack("<H", 2) + b"[]" + good),
        "zero_files": ("check", "file count", B.header_bytes(meta(0, 0))),
        "bad_magic": ("check", "bad magic", b"EVB0" + B.header_bytes(meta(2, gsize))[4:] + good),
        "count_too_high": ("check", "truncated", B.header_bytes(meta(3, gsize)) + good),
        "trailing_data": ("check", "trailing", B.header_bytes(meta(2, gsize)) + good + b"junk"),
        "declared_size": ("check", "declared size", B.header_bytes(meta(2, gsize + 1)) + good),
        "raw_size_mismatch": ("check", "stored size mismatch", B.header_bytes(meta(1, 3)) + w("firmware/a.py", b"abc", stored=b"abcd")),
        "bad_flags": ("check", "flags", B.header_bytes(meta(1, 3)) + w("firmware/a.py", b"abc", flags=4)),
        "wrong_mpy": ("check", "mpy", B.header_bytes(meta(2, gsize, mpy=[5, 0])) + good),
        "bad_wbits": ("check", "window", B.header_bytes(meta(2, gsize, wbits=15)) + good),
        "bad_sha": ("copy", "sha256 mismatch", B.header_bytes(meta(2, gsize)) + w("firmware/__init__.py", b"# x\n") + w("firmware/agent.py", b"def run(i):\n    pass\n", sha=sha0)),
        "bad_sha_deflate": ("copy", "sha256 mismatch", B.header_bytes(meta(1, 1200)) + w("firmware/a.py", b"hello " * 200, flags=1, stored=z, sha=sha0)),
        "corrupt_deflate": ("copy", "data", B.header_bytes(meta(1, 1200)) + w("firmware/a.py", b"hello " * 200, flags=1, stored=bytes(random.Random(1).getrandbits(8) for _ in range(len(z))))),
        "deflate_longer": ("copy", "longer than declared", B.header_bytes(meta(1, 1190)) + w("firmware/a.py", b"hello " * 200, flags=1, stored=z, raw_size=1190)),
        "deflate_shorter": ("copy", "short data", B.header_bytes(meta(1, 1300)) + w("firmware/a.py", b"hello " * 200, flags=1, stored=z, raw_size=1300)),
        "deflate_stored_mismatch": ("copy", "stored size mismatch", B.header_bytes(meta(1, 1200)) + w("firmware/a.py", b"hello " * 200, flags=1, stored=z + b"\0\0")),
    }
    table = {}
    for name, (phase, text, data) in cases.items():
        with open(os.path.join(d, "hostile_%s.evb" % name), "wb") as f:
            f.write(data)
        table[name] = [phase, text]
    # truncated: a good bundle cut short (the payload size says the full length)
    with open(os.path.join(d, "v2.evb"), "rb") as f:
        full = f.read()
    with open(os.path.join(d, "hostile_truncated.evb"), "wb") as f:
        f.write(full[:len(full) // 2])
    table["truncated"] = ["check", "truncated", len(full)]
    with open(os.path.join(d, "hostile.json"), "w") as f:
        json.dump(table, f)


def _host_checks(d):
    """Run the builder's refusals on the host; the device test asserts them."""
    res = {}
    base = os.path.join(d, "hc")
    src = os.path.join(base, "src")
    os.makedirs(os.path.join(src, "firmware"), exist_ok=True)
    with open(os.path.join(base, "secret.py"), "w") as f:
        f.write("x = 1\n")
    with open(os.path.join(src, "firmware", "ok.py"), "w") as f:
        f.write("y = 2\n")

    def attempt(name, **kw):
        try:
            B.build(src, os.path.join(base, name + ".evb"), "1.0.0", **kw)
            res[name] = "accepted"
        except B.BundleError as e:
            res[name] = "rejected: %s" % e

    attempt("include_dotdot", include=["../secret.py"])
    attempt("include_abs", include=[os.path.join(base, "secret.py")])
    os.symlink(os.path.join(base, "secret.py"), os.path.join(src, "firmware", "link.py"))
    attempt("symlink_outside")
    os.remove(os.path.join(src, "firmware", "link.py"))
    with open(os.path.join(src, "firmware", "bad name.py"), "w") as f:
        f.write("z = 3\n")
    attempt("bad_name")
    os.remove(os.path.join(src, "firmware", "bad name.py"))
    attempt("good", include=["firmware"])
    meta, files = B.read(os.path.join(base, "good.evb"))
    res["good_roundtrip"] = [p for p, _ in files] == ["firmware/ok.py"] and files[0][1] == b"y = 2\n"
    with open(os.path.join(d, "host_checks.json"), "w") as f:
        json.dump(res, f)


def make(d):
    _build(d, "v1", "1.0.0")
    _build(d, "v2", "2.0.0")
    _build(d, "v2_raw", "2.0.0", compress=False)
    _build(d, "v3", "3.0.0")
    _build(d, "v2_esp32", "2.0.0", board="esp32")
    _build(d, "crash", "2.1.0", mode="crash")
    _build(d, "noimport", "2.2.0", mode="noimport")
    _build(d, "pc1", "1.0.0", helper_kb=1)
    _build(d, "pc2", "2.0.0", helper_kb=1)
    rnd = random.Random(7)
    _build(d, "mem_small", "5.0.0", helper_kb=8, extra=bytes(rnd.getrandbits(8) for _ in range(8 * 1024)))
    _build(d, "mem_big", "5.0.1", helper_kb=128, extra=bytes(rnd.getrandbits(8) for _ in range(128 * 1024)))
    with open(os.path.join(d, "v2.evb"), "rb") as f:
        payload = f.read()
    with open(os.path.join(d, "v2.img"), "wb") as f:
        f.write(b"\x3d\xb8\xf3\x96" + bytes(0x200 - 4) + payload + b"\x07\x69" + bytes(62))
    with open(os.path.join(d, "images.json"), "w") as f:
        json.dump({"v2.img": [0x200, len(payload)]}, f)
    _hostile(d)
    _host_checks(d)
