# Width-w non-adjacent form of a scalar, shared by the Ed25519 and P-256
# joint scalar multiplications (firmware/ota/ed25519.py, ecdsa_p256.py).


def digits(k, w, size):
    """Width-w NAF digits of k >= 0 as a bytearray of `size` signed digits
    (two's complement bytes), least significant first, and their number."""
    out = bytearray(size)
    full = 1 << w
    mask = full - 1
    half = full >> 1
    i = 0
    while k:
        if k & 1:
            d = k & mask
            if d >= half:
                d -= full
            k -= d
            out[i] = d & 0xFF
        k >>= 1
        i += 1
    return out, i
