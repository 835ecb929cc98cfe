"""`evsectl release`: compile, bundle, compress and sign a firmware release.

Steps: mpy-cross every module of the package (bytecode for the target's .mpy
version), bundle the files (tools/bundle.py; raw DEFLATE), sign the bundle as
an MCUboot image with `imgtool sign` (Ed25519 or ECDSA P-256, version, security counter,
board id in the protected custom TLV 0x00A0), then check the result twice:
with `imgtool verify` and with the device's own verifier (tools/verify.py).
Writes OUT/<name>-<version>.img and a JSON description beside it.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

from tools import bundle, keys, verify
from tools.mpunix import ROOT, mpy_cross

_VERSION = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,5})(?:\+(\d{1,10}))?$")
_BOARD = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
BOARDS = ("sim", "esp32", "rp2")    # the board ids firmware/config.py accepts (tests/test_evsectl.py checks)
HEADER_SIZE = 0x20


def parse_version(text):
    m = _VERSION.match(text or "")
    if not m:
        raise ValueError("version %r: expected MAJOR.MINOR.REVISION[+BUILD], e.g. 1.2.0" % text)
    major, minor, rev, build = (int(g) if g else 0 for g in m.groups())
    if major > 255 or minor > 255 or rev > 65535 or build > 0xFFFFFFFF:
        raise ValueError("version %r out of range (255.255.65535+4294967295)" % text)
    return major, minor, rev, build


def compile_tree(src, dst, use_mpy=True):
    """Copy package `src` into dst/<basename>, compiling .py to .mpy."""
    name = os.path.basename(os.path.normpath(src))
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, os.path.dirname(os.path.normpath(src)))
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            host = os.path.join(dirpath, fn)
            if use_mpy:
                out = os.path.join(dst, rel, fn[:-3] + ".mpy")
                p = subprocess.run([mpy_cross(), "-O1", "-s", os.path.join(rel, fn), "-o", out, host],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise ValueError("mpy-cross failed on %s:\n%s" % (host, p.stderr.strip()))
            else:
                shutil.copyfile(host, os.path.join(dst, rel, fn))
            count += 1
    if not count:
        raise ValueError("no Python modules under %s" % src)
    return name


def _existing_key(img_path, json_path):
    """Key hash (hex) of the release already at these paths, or None when
    it cannot be told."""
    try:
        with open(json_path) as f:
            kh = json.load(f).get("key_hash")
        return kh if isinstance(kh, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def build(key, version, board, security_counter=None, src=None, out="build", use_mpy=True,
          compress=True, name="evse", force=False, extra_files=None):
    vt = parse_version(version)
    if security_counter is None:
        # default: the major version (docs/ota.md "Security counter"); a
        # security fix inside a major line bumps it explicitly
        security_counter = vt[0]
    if not _BOARD.match(board or ""):
        raise ValueError("board id %r: 1-32 characters of A-Z a-z 0-9 . _ -" % board)
    if board not in BOARDS:
        raise ValueError("board id %r is not a known board (%s): a release for it would be refused by "
                         "every board" % (board, ", ".join(BOARDS)))
    if security_counter is not None and not 0 <= security_counter <= 0xFFFFFFFF:
        raise ValueError("security counter must be 0..4294967295")
    src = src or os.path.join(ROOT, "firmware")
    if not os.path.isdir(src):
        raise FileNotFoundError("no package directory %s" % src)
    priv = keys.load_private(key)
    raw_pub = keys.raw_public(priv)
    vtext = "%d.%d.%d" % vt[:3] + ("+%d" % vt[3] if vt[3] else "")
    base = os.path.join(out, "%s-%s-%s" % (name, board, vtext))
    img_path, json_path = base + ".img", base + ".json"
    if os.path.exists(img_path) or os.path.exists(json_path):
        old = _existing_key(img_path, json_path)
        mine = keys.keyhash(raw_pub).hex()
        if old is not None and old != mine:
            raise FileExistsError("%s exists, signed with another key (%s, not %s): a version is never "
                                  "re-signed with a different key; choose a new version"
                                  % (img_path, old[:16], mine[:16]))
        if not force:
            raise FileExistsError("%s exists (release %s for %s): refusing to overwrite it; use a new "
                                  "version, or --force to rebuild it with the same key" % (img_path, vtext, board))
        if old is None:
            raise FileExistsError("%s exists without a readable %s: cannot tell its key; remove it "
                                  "first" % (img_path, os.path.basename(json_path)))
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "tree")
        pkg = compile_tree(src, tree, use_mpy)
        for rel, data in (extra_files or {}).items():
            # data files shipped beside the modules, e.g. {"firmware/blob.bin": b"..."}
            p = os.path.join(tree, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        bpath = os.path.join(tmp, "payload.bin")
        meta = bundle.build(tree, bpath, vtext, board=board, compress=compress, include=[pkg])
        cmd = [keys.imgtool(), "sign", "--key", key, "--version", vtext,
               "--header-size", str(HEADER_SIZE), "--pad-header", "--align", "4",
               "--slot-size", str(16 << 20), "--custom-tlv", "0xa0", board]
        if security_counter is not None:
            cmd += ["--security-counter", str(security_counter)]
        p = subprocess.run(cmd + [bpath, img_path], capture_output=True, text=True)
        if p.returncode != 0:
            raise ValueError("imgtool sign failed: %s" % (p.stderr or p.stdout).strip())
    p = subprocess.run([keys.imgtool(), "verify", "--key", key, img_path], capture_output=True, text=True)
    if p.returncode != 0:
        raise ValueError("imgtool verify rejected the release: %s" % (p.stderr or p.stdout).strip())
    with tempfile.NamedTemporaryFile(suffix=".pub", delete=False) as f:
        f.write(raw_pub)
    try:
        res = verify.verify(img_path, [f.name], board)
    finally:
        os.unlink(f.name)
    if not res["ok"]:
        raise ValueError("the device verifier rejected the release: %s" % res["error"])
    with open(img_path, "rb") as f:
        data = f.read()
    desc = {
        "name": name,
        "version": vtext,
        "version_tuple": list(vt),
        "board": board,
        "security_counter": security_counter,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "payload_size": res["payload_size"],
        "mpy": (meta or {}).get("mpy") if isinstance(meta, dict) else None,
        "files": (meta or {}).get("files") if isinstance(meta, dict) else None,
        "key_hash": keys.keyhash(raw_pub).hex(),
        "key_type": keys.key_type(priv),
        "image": os.path.basename(img_path),
    }
    with open(json_path, "w") as f:
        json.dump(desc, f, indent=2)
        f.write("\n")
    return img_path, json_path, desc


def main(a):
    img, js, d = build(a.key, a.version, a.board, a.security_counter, a.src, a.out,
                       use_mpy=not a.no_mpy, compress=not a.no_compress, force=getattr(a, "force", False))
    print("release %s for board %s" % (d["version"], d["board"]))
    print("  image   %s (%d bytes, sha256 %s)" % (img, d["size"], d["sha256"][:16]))
    print("  files   %s, bytecode %s" % (d["files"], "mpy v%d.%d" % tuple(d["mpy"]) if d["mpy"] else ".py sources"))
    print("  signed  key %s, security counter %s" % (d["key_hash"][:16], d["security_counter"]))
    print("  checked imgtool verify: ok; device verifier: ok")
    print("  wrote   %s" % js)
    return 0
