"""Build and read firmware bundles (the payload of a signed OTA image). CPython.

Format (docs/image-format.md, "Bundle and slots"), all integers little-endian:

    b'EVB1' | u16 meta_len | meta (JSON, UTF-8, <= 512 bytes)
    entry * meta["files"], sorted strictly ascending by path components:
        u8 flags (0 stored, 1 raw deflate, window 2**meta["wbits"])
        u8 path_len (1..100) | u16 reserved (0)
        u32 raw_size | u32 stored_size | 32 bytes SHA-256 of the raw content
        path (ASCII, '/'-separated, [A-Za-z0-9._-]) | stored_size bytes of data
    nothing after the last entry

    python -m tools.bundle build SRC OUT --version 1.2.0 [--board B] [--no-compress] [--include firmware]
    python -m tools.bundle list BUNDLE
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import zlib

MAGIC = b"EVB1"
ENTRY = struct.Struct("<BBHII32s")
FLAG_DEFLATE = 1
MAX_META = 512
MAX_PATH = 100
MAX_DEPTH = 8
MAX_FILE = 4 << 20
MAX_FILES = 512
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
SKIP_DIRS = {"__pycache__"}


class BundleError(Exception):
    pass


def check_path(path):
    """Raise BundleError unless `path` is a valid in-bundle path; returns its parts."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH:
        raise BundleError("bad path length: %r" % (path,))
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise BundleError("path too deep: %r" % path)
    for p in parts:
        if p in ("", ".", "..") or not set(p) <= SAFE:
            raise BundleError("bad path: %r" % path)
    if parts[0].startswith("MANIFEST"):
        raise BundleError("reserved name: %r" % path)
    return parts


def sort_key(path):
    return path.split("/")


def header_bytes(meta):
    raw = json.dumps(meta, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<H", len(raw)) + raw


def entry_bytes(path, raw, flags=0, stored=None, sha=None, raw_size=None,
                stored_size=None, reserved=0):
    """One entry; the optional overrides exist to make hostile test bundles."""
    pb = path.encode() if isinstance(path, str) else path
    if stored is None:
        stored = raw
    return ENTRY.pack(flags, len(pb) & 0xFF, reserved,
                      len(raw) if raw_size is None else raw_size,
                      len(stored) if stored_size is None else stored_size,
                      hashlib.sha256(raw).digest() if sha is None else sha) + pb + stored


def deflate_raw(data, wbits):
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    return c.compress(data) + c.flush()


def _mpy_version(data, name):
    if len(data) < 4 or data[0:1] != b"M":
        raise BundleError("not an .mpy file: " + name)
    return [data[1], data[2] & 3]


def collect(src_dir, include=None):
    """Sorted list of (bundle path, host path) of the files under src_dir."""
    root = os.path.realpath(src_dir)
    if not os.path.isdir(root):
        raise BundleError("not a directory: %s" % src_dir)
    found = {}

    def inside(p):
        rp = os.path.realpath(p)
        if rp != root and not rp.startswith(root + os.sep):
            raise BundleError("outside the tree: %s" % p)
        return rp

    def add(host):
        rel = os.path.relpath(inside(host), root).replace(os.sep, "/")
        check_path(rel)
        if rel in found:
            return
        found[rel] = host

    for inc in include or ["."]:
        if os.path.isabs(inc):
            raise BundleError("absolute include: %s" % inc)
        top = os.path.join(root, inc)
        inside(top)
        if os.path.isfile(top):
            add(top)
            continue
        if not os.path.isdir(top):
            raise BundleError("no such file or directory: %s" % inc)
        for dirpath, dirs, files in os.walk(top, followlinks=False):
            inside(dirpath)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for fn in sorted(files):
                if fn.startswith(".") or fn.endswith(".pyc"):
                    continue
                add(os.path.join(dirpath, fn))
    if not found:
        raise BundleError("no files to bundle")
    if len(found) > MAX_FILES:
        raise BundleError("too many files: %d" % len(found))
    return sorted(found.items(), key=lambda kv: sort_key(kv[0]))


def build(src_dir, out_path, version, board=None, compress=True, include=None, wbits=11):
    """Bundle the files under src_dir (optionally only `include`, paths relative
    to it) into out_path. Paths in the bundle are relative to src_dir, which is
    the slot root (so a package is bundled as 'firmware/...'). Returns meta."""
    if not isinstance(version, str) or not version or len(version) > 32:
        raise BundleError("bad version: %r" % (version,))
    if not 9 <= wbits <= 12:
        raise BundleError("wbits must be 9..12")
    files = collect(src_dir, include)
    mpy, body, total = None, [], 0
    for rel, host in files:
        with open(host, "rb") as f:
            raw = f.read()
        if len(raw) > MAX_FILE:
            raise BundleError("file too large: %s" % rel)
        if rel.endswith(".mpy"):
            v = _mpy_version(raw, rel)
            if mpy is not None and v != mpy:
                raise BundleError("mixed .mpy versions: %s" % rel)
            mpy = v
        flags, stored = 0, raw
        if compress and raw:
            z = deflate_raw(raw, wbits)
            if len(z) < len(raw):
                flags, stored = FLAG_DEFLATE, z
        body.append(entry_bytes(rel, raw, flags, stored))
        total += len(raw)
    meta = {"version": version, "board": board, "mpy": mpy, "files": len(files),
            "size": total, "wbits": wbits}
    head = header_bytes(meta)
    if len(head) - 6 > MAX_META:
        raise BundleError("meta too large")
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head)
        for b in body:
            f.write(b)
    os.replace(tmp, out_path)
    return meta


def read(path_or_file):
    """Parse and check a bundle; returns (meta, [(path, raw_bytes), ...])."""
    try:
        return _read(path_or_file)
    except (struct.error, zlib.error, KeyError, TypeError, ValueError) as e:
        raise BundleError("malformed bundle: %s" % e)


def _read(path_or_file):
    if isinstance(path_or_file, (bytes, bytearray)):
        data = bytes(path_or_file)
    elif hasattr(path_or_file, "read"):
        data = path_or_file.read()
    else:
        with open(path_or_file, "rb") as f:
            data = f.read()
    if data[:4] != MAGIC or len(data) < 6:
        raise BundleError("bad magic")
    n = struct.unpack_from("<H", data, 4)[0]
    if n > MAX_META:
        raise BundleError("meta too large")
    meta = json.loads(data[6:6 + n])
    pos, out, prev = 6 + n, [], None
    for _ in range(meta["files"]):
        flags, plen, _r, size, stored, sha = ENTRY.unpack_from(data, pos)
        pos += ENTRY.size
        path = data[pos:pos + plen].decode("ascii")
        pos += plen
        parts = check_path(path)
        if prev is not None and (parts <= prev or parts[:len(prev)] == prev):
            raise BundleError("unsorted or conflicting path: %s" % path)
        prev = parts
        blob = data[pos:pos + stored]
        pos += stored
        raw = zlib.decompress(blob, -meta["wbits"]) if flags & FLAG_DEFLATE else blob
        if len(raw) != size or hashlib.sha256(raw).digest() != sha:
            raise BundleError("content mismatch: %s" % path)
        out.append((path, raw))
    if pos != len(data):
        raise BundleError("trailing data")
    return meta, out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bundle", description="Build or list firmware bundles.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="bundle a slot tree (e.g. a dir holding firmware/)")
    b.add_argument("src")
    b.add_argument("out")
    b.add_argument("--version", required=True)
    b.add_argument("--board")
    b.add_argument("--no-compress", action="store_true")
    b.add_argument("--include", action="append", help="relative path to include (repeatable)")
    b.add_argument("--wbits", type=int, default=11)
    ls = sub.add_parser("list", help="check a bundle and list its files")
    ls.add_argument("bundle")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            meta = build(a.src, a.out, a.version, a.board, not a.no_compress, a.include, a.wbits)
            print("%s: %d files, %d bytes raw, %d bytes" % (a.out, meta["files"], meta["size"],
                                                             os.path.getsize(a.out)))
        else:
            meta, files = read(a.bundle)
            print(json.dumps(meta))
            for path, raw in files:
                print("%8d  %s" % (len(raw), path))
    except (BundleError, OSError, ValueError) as e:
        print("bundle: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
