"""Bench prep (CPython): the firmware as a ROMFS image, for
tests/bench/bench_heap.py (what executing bytecode in place from flash saves).
firmware/ and lib/umqtt compiled with mpy-cross (tools.release.compile_tree,
as a release does), then packed by mpremote's ROMFS builder into
$EVSE_OTA_BENCH_DIR/fw.romfs (default /tmp/evse-ota-bench)."""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tools import mpunix, release  # noqa: E402

OUT = os.environ.get("EVSE_OTA_BENCH_DIR", "/tmp/evse-ota-bench")


def main():
    os.makedirs(OUT, exist_ok=True)
    d = tempfile.mkdtemp(prefix="evse-romfs-")
    try:
        release.compile_tree(os.path.join(ROOT, "firmware"), d, use_mpy=True)
        os.makedirs(os.path.join(d, "umqtt"))
        subprocess.run([mpunix.mpy_cross(), "-o", os.path.join(d, "umqtt", "simple.mpy"),
                        os.path.join(ROOT, "lib", "umqtt", "simple.py")], check=True)
        mpremote = os.path.join(os.path.dirname(sys.executable), "mpremote")
        subprocess.run([mpremote if os.path.exists(mpremote) else "mpremote", "romfs", "--no-mpy",
                        "-o", os.path.join(OUT, "fw.romfs"), "build", d],
                       check=True, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
