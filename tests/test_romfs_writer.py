"""firmware/ota/romfs.py (the device's streaming ROMFS packer) on the unix
port, both lanes, at the 96K cap: its image is byte for byte what mpremote's
builder (the pinned mpremote, `romfs build --no-mpy`) makes of the same tree,
size_of() predicts its length, the digest is the SHA-256 of what was
written, the pieces handed to write() stay <= 512 bytes, vfs.VfsRom mounts
the image and imports a module from it, a keep() filter drops files, and a
non-ASCII name is refused."""
import hashlib
import os
import subprocess

import pytest
from mpremote.romfs import make_romfs

from tools import mpunix

SCRIPT = r"""
import sys, os
from firmware.ota import romfs
src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
class Part:
    def __init__(self, f):
        self.f = f
        self.big = 0
    def write(self, b):
        if len(b) > 512:
            self.big += 1
        self.f.write(b)
keep = None
if mode == "keep":
    keep = lambda p: not p.endswith(".txt")
try:
    with open(out, "wb") as f:
        p = Part(f)
        d = romfs.write_image(src, p, keep)
except ValueError as e:
    print("ValueError", e)
    raise SystemExit
print("size", romfs.size_of(src, keep), "big", p.big, "digest", d.hex())
if mode == "mount":
    import vfs
    with open(out, "rb") as f:
        img = f.read()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom/pkg")
    import hello
    print("hello", hello.VALUE, sorted(os.listdir("/rom")))
"""


def _lanes():
    out = [("mp64", mpunix.binary())]
    b32 = mpunix.mp32_binary()
    out.append(("mp32", b32))
    return out


def _run(binary, tmp_path, src, mode):
    script = tmp_path / "pack.py"
    script.write_text(SCRIPT)
    out = tmp_path / ("img-%s.romfs" % mode)
    r = subprocess.run([binary, "-X", "heapsize=96K", str(script), str(src), str(out), mode],
                       env=mpunix.env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, out


def _tree(root, n_files):
    (root / "pkg" / "sub" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "pkg" / "hello.py").write_text("VALUE = 42\n")
    (root / "pkg" / "sub" / "exact.bin").write_bytes(bytes(range(256)) * 2)      # 512
    (root / "pkg" / "sub" / "deep" / "big.bin").write_bytes(os.urandom(5000))
    (root / "pkg" / "zero").write_bytes(b"")
    (root / "note.txt").write_text("x" * 129)
    for i in range(n_files):
        (root / "pkg" / ("m%03d.mpy" % i)).write_bytes(os.urandom(i * 7 % 300))


@pytest.mark.parametrize("lane,binary", _lanes(), ids=[x[0] for x in _lanes()])
@pytest.mark.parametrize("n_files", [0, 1, 40])    # image lengths of both paddings, 1-3 byte lengths
def test_image_is_mpremotes_and_mounts(tmp_path, lane, binary, n_files):
    if binary is None:
        pytest.skip("no 32-bit MicroPython (MP32=path)")
    src = tmp_path / "tree"
    _tree(src, n_files)
    want = make_romfs(str(src), mpy_cross=False)
    got, img = _run(binary, tmp_path, src, "mount")
    data = img.read_bytes()
    assert data == want
    fields = got.split()
    assert fields[0:2] == ["size", str(len(want))]
    assert fields[2:4] == ["big", "0"]
    assert fields[5] == hashlib.sha256(want).hexdigest()
    assert "hello 42 ['empty', 'note.txt', 'pkg']" in got


@pytest.mark.parametrize("lane,binary", _lanes(), ids=[x[0] for x in _lanes()])
def test_keep_filter_and_non_ascii_name(tmp_path, lane, binary):
    if binary is None:
        pytest.skip("no 32-bit MicroPython (MP32=path)")
    src = tmp_path / "tree"
    _tree(src, 3)
    got, img = _run(binary, tmp_path, src, "keep")
    data = img.read_bytes()
    # the same tree without the .txt file, built by mpremote
    os.remove(src / "note.txt")
    assert data == make_romfs(str(src), mpy_cross=False)
    assert got.split()[1] == str(len(data))
    (src / "caf\u00e9.py").write_text("")
    got, _ = _run(binary, tmp_path, src, "plain")
    assert got.startswith("ValueError ROMFS names are ASCII"), got
