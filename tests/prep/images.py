"""CPython fixture generators for the signature and image tests (device side).

make(d) writes into directory d:
  keys.bin        raw public keys k1 | k2 | k3 (32 bytes each); k1, k2 trusted,
                  k3 not (k*.pem are the imgtool keys)
  rfc8032.bin     RFC 8032 section 7.1 vectors as records (see _record)
  sigs.bin        signatures made by `cryptography` on random keys/messages
  weird.bin       hand-made edge cases: non-canonical R/A, S >= L (records)
  sha512.bin      (u32 len, data, 64-byte digest) records from hashlib
  *.img           MCUboot images signed with `imgtool sign` (subprocess) or
                  hand-crafted, described in images.json:
                  {name: {"ok": {...expected info...}} or {"error": "substring"},
                   "board": board to verify with, "keys": [indexes of trusted keys]}
"""
import hashlib
import json
import os
import random
import struct
import subprocess
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMGTOOL = os.path.join(os.path.dirname(sys.executable), "imgtool")
if not os.path.exists(IMGTOOL):
    IMGTOOL = os.path.join(ROOT, ".venv", "bin", "imgtool")

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
SLOT = "0x200000"

# RFC 8032 section 7.1: (secret seed, public key, message, signature), hex.
_T1024_MSG = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0")
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
     "d25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
     "4a7c15e9716ed28dc027beceea1ec40a"),
    ("f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e", _T1024_MSG,
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b"
     "5e8fcd4f681e30a6ac00a9704a188a03"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     hashlib.sha512(b"abc").hexdigest(),
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e030"
     "3dca179c138ac17ad9bef1177331a704"),
]


def _raw_pub(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _record(pk, msg, sig):
    """u16 message length, 32-byte key, 64-byte signature, message."""
    return struct.pack("<H", len(msg)) + pk + sig + msg


def check_rfc8032():
    """The copied vectors are right: cryptography re-derives key and signature."""
    for seed, pk, msg, sig in RFC8032:
        priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
        assert _raw_pub(priv).hex() == pk, pk
        assert priv.sign(bytes.fromhex(msg)).hex() == sig, sig
    assert len(bytes.fromhex(RFC8032[3][2])) == 1023


def write_sigs(d, n=256, seed=8032):
    check_rfc8032()
    with open(os.path.join(d, "rfc8032.bin"), "wb") as f:
        for _, pk, msg, sig in RFC8032:
            f.write(_record(bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig)))
    rnd = random.Random(seed)
    with open(os.path.join(d, "sigs.bin"), "wb") as f:
        for i in range(n):
            priv = Ed25519PrivateKey.from_private_bytes(rnd.randbytes(32))
            size = rnd.choice((0, 1, 32, 64, 111, 112, 127, 128, 129, 200, 300, 1000)) if i % 4 else rnd.randrange(0, 260)
            msg = rnd.randbytes(size)
            f.write(_record(_raw_pub(priv), msg, priv.sign(msg)))
    # Edge cases built on the identity point O (encoded y=1): for pk = O and
    # R = O, S = 0, the equation [S]B = R + [k]A holds for every message, so
    # these signatures are VALID with canonical encodings; the non-canonical
    # encodings of the same points must be rejected by the decoder alone.
    ident = (1).to_bytes(32, "little")
    neg_zero = (1 | 1 << 255).to_bytes(32, "little")   # x = 0 with the sign bit
    big_y = (P + 1).to_bytes(32, "little")              # y = p + 1 = 1 (mod p)
    zero_s = bytes(32)
    msg = b"edge case"
    cases = [
        # (expected, pk, sig, label)
        (1, ident, ident + zero_s, "canonical identity key and R"),
        (0, big_y, ident + zero_s, "A with y >= p"),
        (0, neg_zero, ident + zero_s, "A with x = 0 and the sign bit"),
        (0, ident, big_y + zero_s, "R with y >= p"),
        (0, ident, neg_zero + zero_s, "R with x = 0 and the sign bit"),
        (0, ident, ident + L.to_bytes(32, "little"), "S = L (same point as S = 0)"),
    ]
    # a key that is not on the curve: smallest y without a square root
    y = 2
    while _on_curve_y(y):
        y += 1
    cases.append((0, y.to_bytes(32, "little"), ident + zero_s, "A not on the curve"))
    # S + L for a real signature
    priv = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    sig = priv.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    cases.append((1, _raw_pub(priv), sig, "real signature"))
    cases.append((0, _raw_pub(priv), sig[:32] + (s + L).to_bytes(32, "little"), "real signature with S + L"))
    with open(os.path.join(d, "weird.bin"), "wb") as f:
        for ok, pk, sg, label in cases:
            lab = label.encode()
            f.write(bytes([ok, len(lab)]) + lab + _record(pk, msg, sg))


def _on_curve_y(y):
    d = -121665 * pow(121666, P - 2, P) % P
    u = (y * y - 1) % P
    v = (d * y * y + 1) % P
    xx = u * pow(v, P - 2, P) % P
    return xx == 0 or pow(xx, (P - 1) // 2, P) == 1


def write_sha512(d, seed=512):
    rnd = random.Random(seed)
    with open(os.path.join(d, "sha512.bin"), "wb") as f:
        for n in (0, 1, 3, 55, 56, 63, 64, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 1000, 4097):
            data = b"abc" if n == 3 else rnd.randbytes(n)
            f.write(struct.pack("<I", n) + data + hashlib.sha512(data).digest())
        # FIPS 180-2 two-block example (896-bit message)
        data = b"".join(bytes(range(97 + i, 105 + i)) for i in range(14))
        f.write(struct.pack("<I", len(data)) + data + hashlib.sha512(data).digest())


# ---------------------------------------------------------------- images

def _imgtool(*args):
    p = subprocess.run([IMGTOOL] + [str(a) for a in args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("imgtool %s failed: %s%s" % (" ".join(map(str, args)), p.stdout, p.stderr))
    return p


def keygen(path, kind="ed25519"):
    _imgtool("keygen", "-k", path, "-t", kind)
    if kind == "ed25519":
        with open(path, "rb") as f:
            return _raw_pub(serialization.load_pem_private_key(f.read(), None))
    return None


def sign(src, dst, key=None, version="1.0.0", header="0x200", extra=()):
    args = ["sign"]
    if key:
        args += ["-k", key]
    args += ["--version", version, "--header-size", header, "--pad-header", "--slot-size", SLOT]
    args += list(extra) + [src, dst]
    _imgtool(*args)


def tlvs(img):
    """[(area, offset of the TLV header, type, length)] of an image."""
    hsz, psz, isz = struct.unpack_from("<HHI", img, 8)
    out = []
    off = hsz + isz
    for area in ("prot", "unprot"):
        if off + 4 > len(img):
            break
        magic, tot = struct.unpack_from("<HH", img, off)
        if area == "prot" and magic != 0x6908:
            area = "unprot"
        end = off + tot
        pos = off + 4
        while pos < end:
            t, n = struct.unpack_from("<HH", img, pos)
            out.append((area, pos, t, n))
            pos += 4 + n
        off = end
        if area == "unprot":
            break
    return out


def _find(img, ttype):
    for area, pos, t, n in tlvs(img):
        if t == ttype:
            return pos, n
    raise KeyError(ttype)


def _flip(img, off, bit=0):
    b = bytearray(img)
    b[off] ^= 1 << bit
    return bytes(b)


def _header(load=0, hsz=32, psz=0, isz=0, flags=0, ver=(1, 0, 0, 0)):
    return struct.pack("<IIHHIIBBHII", 0x96F3B83D, load, hsz, psz, isz, flags, ver[0], ver[1], ver[2], ver[3], 0)


def make_images(d, payload_seed=61851):
    rnd = random.Random(payload_seed)
    k = [keygen(os.path.join(d, "k%d.pem" % i)) for i in (1, 2, 3)]
    with open(os.path.join(d, "keys.bin"), "wb") as f:
        f.write(b"".join(k))
    keygen(os.path.join(d, "enc.pem"), "x25519")
    k1, k2, k3 = (os.path.join(d, "k%d.pem" % i) for i in (1, 2, 3))
    man = {}

    def path(name):
        return os.path.join(d, name)

    def payload(name, n):
        with open(path(name), "wb") as f:
            f.write(rnd.randbytes(n))
        return path(name)

    def img(name, entry, **kw):
        src = kw.pop("src")
        sign(src, path(name), **kw)
        man[name] = entry
        with open(path(name), "rb") as f:
            return f.read()

    def raw(name, data, entry):
        with open(path(name), "wb") as f:
            f.write(data)
        man[name] = entry

    p1 = payload("p1.bin", 3000)
    p2 = payload("p2.bin", 20000)
    p0 = path("p0.bin")
    open(p0, "wb").close()

    def ok(version, sec, size, hdr, board=None, key_index=0):
        return {"ok": {"version": list(version), "security_counter": sec, "payload_size": size,
                       "header_size": hdr, "board": board, "key_index": key_index}}

    # valid images
    img("valid_min.img", ok((1, 2, 3, 4), None, 3000, 32), src=p1, key=k1,
        version="1.2.3+4", header="0x20")
    board = img("valid_board.img", ok((2, 0, 1, 99), 3, 20000, 0x200, "evse-esp32"), src=p2, key=k1,
                version="2.0.1+99", extra=["--align", "8", "--security-counter", "3",
                                           "--custom-tlv", "0xa0", "evse-esp32"])
    img("valid_full.img", ok((0, 9, 65535, 4294967295), 4294967295, 3000, 0x200, "evse-rp2040"), src=p1,
        key=k1, version="0.9.65535+4294967295",
        extra=["--public-key-format", "full", "--align", "4", "--security-counter", "4294967295",
               "--custom-tlv", "0xa0", "evse-rp2040"])
    img("valid_empty.img", ok((1, 0, 0, 0), 0, 0, 0x20), src=p0, key=k1, header="0x20",
        extra=["--security-counter", "0"])
    rot = ok((3, 1, 0, 0), 7, 3000, 0x200, "evse-esp32", key_index=1)
    rot["keys"] = [0, 1]
    img("valid_k2.img", rot, src=p1, key=k2, version="3.1.0",
        extra=["--security-counter", "7", "--custom-tlv", "0xa0", "evse-esp32"])
    man["valid_k2.img"]["board"] = "evse-esp32"
    rot_full = ok((3, 1, 0, 0), None, 3000, 0x200, None, key_index=1)
    rot_full["keys"] = [0, 1]
    img("valid_k2_full.img", rot_full, src=p1, key=k2, version="3.1.0",
        extra=["--public-key-format", "full"])
    man["valid_board_checked.img"] = dict(ok((2, 0, 1, 99), 3, 20000, 0x200, "evse-esp32"), board="evse-esp32", file="valid_board.img")

    # signed, but wrong
    def err(msg, **kw):
        e = {"error": msg}
        e.update(kw)
        return e

    man["wrong_board.img"] = err("not 'evse-rp2040'", file="valid_board.img", board="evse-rp2040")
    man["no_board.img"] = err("no board id", file="valid_min.img", board="evse-esp32")
    man["no_board_prot.img"] = err("no board id", file="valid_empty.img", board="evse-esp32")
    man["k2_untrusted.img"] = err("untrusted key", file="valid_k2.img", keys=[0])
    man["k2_untrusted_full.img"] = err("untrusted key", file="valid_k2_full.img", keys=[0, 2])
    img("wrong_key.img", err("untrusted key"), src=p1, key=k3)
    img("wrong_key_full.img", err("untrusted key"), src=p1, key=k3, extra=["--public-key-format", "full"])
    img("unsigned.img", err("not signed"), src=p1)
    img("encrypted.img", err("encrypted"), src=p1, key=k1, extra=["-E", path("enc.pem")])
    img("non_bootable.img", err("non-bootable"), src=p1, key=k1, extra=["--non-bootable"])
    img("ram_load.img", err("RAM-load"), src=p1, key=k1, extra=["--load-addr", "0x20000000"])
    img("sha512.img", err("SHA512"), src=p1, key=k1, extra=["--sha", "512"])
    img("pure.img", err("not supported"), src=p1, key=k1, extra=["--pure"])

    # tampered after signing
    hsz = 0x200
    raw("tampered_payload.img", _flip(board, hsz + 12345, 3), err("hash mismatch"))
    pos, _ = _find(board, 0x50)
    raw("tampered_sec_cnt.img", _flip(board, pos + 4, 1), err("hash mismatch"))
    pos, n = _find(board, 0xA0)
    raw("tampered_board.img", _flip(board, pos + 4 + n - 1, 0), err("hash mismatch"))
    raw("tampered_header.img", _flip(board, 20, 0), err("hash mismatch"))   # version major
    raw("tampered_header_pad.img", _flip(board, 100, 0), err("hash mismatch"))
    pos, _ = _find(board, 0x10)
    raw("tampered_hash_tlv.img", _flip(board, pos + 4 + 31, 7), err("hash mismatch"))
    pos, _ = _find(board, 0x24)
    raw("tampered_sig.img", _flip(board, pos + 4 + 5, 2), err("bad signature"))
    raw("tampered_sig_s.img", _flip(board, pos + 4 + 40, 0), err("bad signature"))
    pos, _ = _find(board, 0x01)
    raw("tampered_keyhash.img", _flip(board, pos + 4, 0), err("untrusted key"))
    raw("bad_magic.img", _flip(board, 0, 0), err("bad image magic"))
    raw("trailing.img", board + b"\xff" * 16, err("beyond the end"))
    # signature TLV removed (unprotected area shrunk accordingly)
    pos, n = _find(board, 0x24)
    cut = bytearray(board[:pos])
    unprot = [t for t in tlvs(board) if t[0] == "unprot"][0][1] - 4
    struct.pack_into("<H", cut, unprot + 2, len(cut) - unprot)
    raw("sig_removed.img", bytes(cut), err("not signed"))

    # hand-made hostile headers and TLV areas
    raw("hostile_overflow.img", _header(isz=0xFFFFFFF0) + bytes(64), err("overflow"))
    raw("hostile_hdr_small.img", _header(hsz=16) + bytes(64), err("smaller than the 32-byte header"))
    raw("hostile_huge_payload.img", _header(isz=0x7FFF0000) + bytes(4000), err("truncated"))
    raw("hostile_huge_slot.img", _header(isz=0x7FFF0000) + bytes(64), err("does not fit", max_size=0x200000))
    raw("hostile_prot_small.img", _header(psz=2) + bytes(64), err("protected TLV area size 2"))
    prot = struct.pack("<HH", 0x6908, 12) + struct.pack("<HH", 0xA0, 200) + b"evse"
    raw("hostile_prot_tlv_len.img", _header(psz=12) + prot + bytes(64),
        err("runs past the end of the protected TLV area"))
    prot = struct.pack("<HH", 0x6908, 20) + struct.pack("<HH", 0xA0, 4) + b"evse"
    raw("hostile_prot_total.img", _header(psz=12) + prot + bytes(64), err("bad protected TLV area"))
    raw("hostile_prot_undeclared.img", _header() + struct.pack("<HH", 0x6908, 8) + bytes(64),
        err("not declared"))
    raw("hostile_unprot_huge.img", _header() + struct.pack("<HH", 0x6907, 0xFFFF) + bytes(64),
        err("out of range"))
    raw("hostile_unprot_magic.img", _header() + struct.pack("<HH", 0x1234, 8) + bytes(64),
        err("bad TLV area magic"))
    unp = struct.pack("<HH", 0x6907, 44) + struct.pack("<HH", 0x10, 600) + bytes(36)
    raw("hostile_tlv_len.img", _header() + unp, err("runs past the end of the unprotected"))
    pos, _ = _find(board, 0x10)
    raw("hostile_sha_len.img", bytes(board[:pos + 2]) + struct.pack("<H", 0x4000) + board[pos + 4:],
        err("runs past the end"))
    raw("hostile_stray.img", _header() + struct.pack("<HH", 0x6907, 6) + b"\x10\x00", err("stray bytes"))
    raw("hostile_sec_in_unprot.img", _header() + struct.pack("<HH", 0x6907, 12) + struct.pack("<HHI", 0x50, 4, 9),
        err("outside the protected area"))
    raw("hostile_flags.img", _header(flags=0x80000000) + bytes(64), err("unknown flags 0x80000000"))
    with open(path("images.json"), "w") as f:
        json.dump(man, f, indent=1, sort_keys=True)
    return man


def make(d):
    write_sigs(d)
    write_sha512(d)
    make_images(d)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/ota-fixtures"
    os.makedirs(out, exist_ok=True)
    make(out)
    print(out)
