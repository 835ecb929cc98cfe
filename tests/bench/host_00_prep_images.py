"""Bench prep (CPython, runs first): sign a 64 KiB and a 1 MiB image with
`imgtool sign` for tests/bench/bench_image.py, which cannot run imgtool itself.
Writes $EVSE_OTA_BENCH_DIR (default /tmp/evse-ota-bench): img64k.img,
img1m.img, keys.bin (raw public key)."""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.prep import images  # noqa: E402

OUT = os.environ.get("EVSE_OTA_BENCH_DIR", "/tmp/evse-ota-bench")


def main():
    os.makedirs(OUT, exist_ok=True)
    key = os.path.join(OUT, "k.pem")
    if os.path.exists(key):
        os.remove(key)
    pub = images.keygen(key)
    with open(os.path.join(OUT, "keys.bin"), "wb") as f:
        f.write(pub)
    rnd = random.Random(1)
    for name, size in (("img64k", 64 * 1024), ("img1m", 1024 * 1024)):
        src = os.path.join(OUT, name + ".bin")
        with open(src, "wb") as f:
            f.write(rnd.randbytes(size))
        images.sign(src, os.path.join(OUT, name + ".img"), key=key, version="1.0.0+1",
                    extra=["--security-counter", "1", "--custom-tlv", "0xa0", "bench-board"])
        os.remove(src)


if __name__ == "__main__":
    main()
