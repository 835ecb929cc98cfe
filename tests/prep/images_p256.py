"""CPython fixture generator for the ECDSA P-256 image tests
(tests/device/test_image_p256.py): MCUboot images signed by the real
`imgtool sign -k <ecdsa-p256 key>`, tampered copies, and key files.

make(d) writes into directory d:
  keys_p256.bin   e1 | e2 | e3 (65-byte uncompressed points; e*.pem are the
                  imgtool keys), then ed1 (32-byte Ed25519 key, ed1.pem)
  trust_mixed.bin a /trust/keys.bin with ed1, e1 and e2 (in that order)
  *.img           images, described in images_p256.json:
                  {name: {"ok": {...}} or {"error": "substring"},
                   "keys": names of the trusted keys, "file": image to use}
"""
import json
import os
import random
import struct
import sys

from cryptography.hazmat.primitives import serialization

from tests.prep import images

SIG_ECDSA = 0x22


def p256_point(pem):
    with open(pem, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def make(d, payload_seed=2560):
    rnd = random.Random(payload_seed)

    def path(name):
        return os.path.join(d, name)

    pts = {}
    for name in ("e1", "e2", "e3"):
        images.keygen(path(name + ".pem"), "ecdsa-p256")
        pts[name] = p256_point(path(name + ".pem"))
    ed1 = images.keygen(path("ed1.pem"))
    with open(path("keys_p256.bin"), "wb") as f:
        f.write(pts["e1"] + pts["e2"] + pts["e3"] + ed1)
    with open(path("trust_mixed.bin"), "wb") as f:
        f.write(ed1 + pts["e1"] + pts["e2"])

    man = {}
    p1 = path("p1.bin")
    with open(p1, "wb") as f:
        f.write(rnd.randbytes(5000))

    def ok(version, sec, board, key_index, keys):
        return {"ok": {"version": list(version), "security_counter": sec, "payload_size": 5000,
                       "header_size": 0x200, "board": board, "key_index": key_index}, "keys": keys}

    def img(name, entry, key, extra=(), version="1.0.0"):
        images.sign(p1, path(name), key=path(key + ".pem"), version=version, extra=list(extra))
        man[name] = entry
        with open(path(name), "rb") as f:
            return f.read()

    def raw(name, data, entry):
        with open(path(name), "wb") as f:
            f.write(data)
        man[name] = entry

    def err(msg, keys=("e1",), **kw):
        e = {"error": msg, "keys": list(keys)}
        e.update(kw)
        return e

    board = ["--security-counter", "5", "--custom-tlv", "0xa0", "evse-esp32"]
    good = img("p256_hash.img", ok((2, 1, 0, 7), 5, "evse-esp32", 0, ["e1"]), "e1", board, "2.1.0+7")
    img("p256_full.img", ok((2, 1, 0, 0), None, None, 1, ["e1", "e2"]), "e2",
        ["--public-key-format", "full"], "2.1.0")
    man["p256_mixed.img"] = dict(ok((2, 1, 0, 7), 5, "evse-esp32", 1, ["ed1", "e1"]), file="p256_hash.img")
    man["ed25519_mixed.img"] = dict(ok((1, 0, 0, 0), None, None, 1, ["e1", "ed1"]), file="ed25519.img")
    img("ed25519.img", man["ed25519_mixed.img"], "ed1")
    del man["ed25519.img"]
    man["p256_untrusted.img"] = err("untrusted key", ("e2", "e3", "ed1"), file="p256_hash.img")
    man["p256_only_ed_trusted.img"] = err("untrusted key", ("ed1",), file="p256_full.img")
    man["ed25519_only_p256_trusted.img"] = err("untrusted key", ("e1", "e2"), file="ed25519.img")
    img("p256_wrong_key.img", err("untrusted key", ("e1", "e2")), "e3")
    # --pad-sig pads the DER signature with zero bytes to 72; a signature that
    # is 72 bytes long anyway gets none: sign again until there is padding
    for _ in range(20):
        padded = img("p256_padded_sig.img", err("not one strict DER"), "e1", ["--pad-sig"])
        pos, n = images._find(padded, SIG_ECDSA)
        if padded[pos + 5] + 2 < n:
            break
    else:
        raise RuntimeError("imgtool --pad-sig never padded")

    # tampered after signing
    raw("p256_tampered_payload.img", images._flip(good, 0x200 + 4321, 5), err("hash mismatch"))
    pos, n = images._find(good, 0xA0)
    raw("p256_tampered_board.img", images._flip(good, pos + 4, 0), err("hash mismatch"))
    pos, n = images._find(good, SIG_ECDSA)
    raw("p256_tampered_sig_r.img", images._flip(good, pos + 4 + n // 4, 3), err("bad signature"))
    raw("p256_tampered_sig_s.img", images._flip(good, pos + 4 + n - 3, 0), err("bad signature"))
    raw("p256_tampered_sig_der.img", images._flip(good, pos + 4, 0), err("not one strict DER"))
    pos, _ = images._find(good, 0x01)
    raw("p256_tampered_keyhash.img", images._flip(good, pos + 4 + 9, 1), err("untrusted key"))
    # the ECDSA TLV length changed: 0 and 80 bytes are out of range
    pos, n = images._find(good, SIG_ECDSA)
    unprot = [t for t in images.tlvs(good) if t[0] == "unprot"][0][1] - 4
    cut = bytearray(good[:pos]) + struct.pack("<HH", SIG_ECDSA, 80) + good[pos + 4:pos + 4 + n] + bytes(80 - n)
    struct.pack_into("<H", cut, unprot + 2, len(cut) - unprot)
    raw("p256_sig_len_80.img", bytes(cut), err("length 80"))
    # an Ed25519 signature TLV beside the ECDSA one
    extra = struct.pack("<HH", 0x24, 64) + bytes(64)
    two = bytearray(good) + extra
    struct.pack_into("<H", two, unprot + 2, len(two) - unprot)
    raw("p256_two_sigs.img", bytes(two), err("duplicate TLV"))
    with open(path("images_p256.json"), "w") as f:
        json.dump(man, f, indent=1, sort_keys=True)
    return man


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/p256-images"
    os.makedirs(out, exist_ok=True)
    make(out)
    print(out)
