# bench: heapsize=96K
# ECDSA P-256 verify time and heap headroom beside Ed25519's, same process,
# same heap (aim: P-256 under 3x the Ed25519 verify time).
import time
from benchlib import report, headroom
from firmware.ota import ecdsa_p256, ed25519

# P-256 signature of the 32-byte zero message, made for this bench with the
# `cryptography` package (private key 0x11c1e17, ECDSA with SHA-256).
P256_PK = bytes.fromhex(
    "04fb6ebc2526cf512ec931980db8d3a94104bc792d1035a0d5d5d58a1dc0c915d7"
    "a88352ad0b7d8e53b308fdfc0f296e4aee1c21d4c7ed4f1f45197068fbd5054f")
P256_SIG = bytes.fromhex(
    "3044022071237d63692183f6c4d0c90cb47783ea14e3f461a8a621d1c60e9c8c7c839832"
    "02207da032d3c297980492f57555029ec603d3d1b76b26d9c7f3cdd0972ee7d3bb15")
# RFC 8032 7.1 TEST 1 (Ed25519, empty message), as in bench_ed25519.py
ED_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
ED_SIG = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
                       "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
MSG = bytes(32)
N = 30


def _avg(fn):
    t0 = time.ticks_us()
    for _ in range(N):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / N / 1000


def main():
    t0 = time.ticks_us()
    assert ecdsa_p256.verify(P256_PK, MSG, P256_SIG)
    report("p256 first verify (builds G table)", time.ticks_diff(time.ticks_us(), t0) / 1000, "ms")
    assert ed25519.verify(ED_PK, b"", ED_SIG)
    t_p = _avg(lambda: ecdsa_p256.verify(P256_PK, MSG, P256_SIG))
    t_e = _avg(lambda: ed25519.verify(ED_PK, b"", ED_SIG))
    report("p256 verify (avg of %d)" % N, t_p, "ms")
    report("ed25519 verify beside it (avg of %d)" % N, t_e, "ms")
    report("p256 / ed25519 verify time", t_p / t_e, "x", "< 3")
    report("p256 verify heap headroom needed",
           headroom(lambda: ecdsa_p256.verify(P256_PK, MSG, P256_SIG)), "bytes")
    report("ed25519 verify heap headroom beside it", headroom(lambda: ed25519.verify(ED_PK, b"", ED_SIG)), "bytes")


main()
