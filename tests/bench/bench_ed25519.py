# bench: heapsize=96K
# Ed25519 verify time, SHA-512 throughput, heap needed by one verify.
import time
from benchlib import report, headroom
from firmware.ota import ed25519
from firmware.ota.sha512 import sha512

PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SIG = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
                    "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
N = 50


def main():
    t0 = time.ticks_us()
    assert ed25519.verify(PK, b"", SIG)
    report("ed25519 first verify (builds B table)", time.ticks_diff(time.ticks_us(), t0) / 1000, "ms")
    msg = bytes(32)   # an image digest is a 32-byte message
    t0 = time.ticks_us()
    for _ in range(N):
        ed25519.verify(PK, msg, SIG)
    report("ed25519 verify (avg of %d)" % N, time.ticks_diff(time.ticks_us(), t0) / N / 1000, "ms", "< 15")
    data = bytes(range(256)) * 16
    t0 = time.ticks_us()
    h = sha512()
    for _ in range(16):
        h.update(data)
    h.digest()
    dt = time.ticks_diff(time.ticks_us(), t0)
    report("sha512 throughput (64 KiB in 4 KiB updates)", 64 / (dt / 1e6), "KiB/s")
    data = None
    report("ed25519 verify heap headroom needed", headroom(lambda: ed25519.verify(PK, b"", SIG)), "bytes")


main()
