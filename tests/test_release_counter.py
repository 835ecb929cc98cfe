"""evsectl release writes an anti-rollback security counter by default (the
major version, docs/ota.md "Security counter"), and the image carries it."""
import os
import subprocess
import sys

from tools import release

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_release_writes_the_major_version_as_security_counter(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tools.evsectl", "keygen", str(tmp_path / "k")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    src = tmp_path / "src" / "firmware"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "agent.py").write_text("def run(info):\n    pass\n")
    img, _, desc = release.build(str(tmp_path / "k.pem"), "3.4.1", "sim", src=str(src),
                                 out=str(tmp_path / "out"), use_mpy=False)
    assert desc["security_counter"] == 3
    data = open(img, "rb").read()
    # protected TLV SEC_CNT (0x50, 4 bytes, little endian) present with value 3
    assert bytes([0x50, 0x00, 0x04, 0x00, 3, 0, 0, 0]) in data
    _, _, desc = release.build(str(tmp_path / "k.pem"), "3.4.2", "sim", security_counter=9,
                               src=str(src), out=str(tmp_path / "out"), use_mpy=False)
    assert desc["security_counter"] == 9
