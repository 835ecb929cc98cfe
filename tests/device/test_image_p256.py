# mptest: prep=tests.prep.images_p256:make
# MCUboot images signed with ECDSA P-256 by `imgtool sign` (TLV 0x22), trusted
# key lists mixing Ed25519 and P-256 keys, and the /trust/keys.bin format
# (firmware/ota/image.py; updater.load_keys: tests/device/test_trust_keys.py).
import json
import mptest
from firmware.ota import image
from firmware.ota.image import ImageError

_keys = None


def keys():
    # name -> raw key
    global _keys
    if _keys is None:
        with open(mptest.data_path("keys_p256.bin"), "rb") as f:
            b = f.read()
        _keys = {"e1": b[0:65], "e2": b[65:130], "e3": b[130:195], "ed1": b[195:227]}
    return _keys


def test_every_p256_fixture_case():
    with open(mptest.data_path("images_p256.json")) as f:
        man = json.load(f)
    n_ok = n_err = 0
    for name in sorted(man):
        case = man[name]
        trusted = [keys()[k] for k in case["keys"]]
        with open(mptest.data_path(case.get("file", name)), "rb") as f:
            if "ok" in case:
                info = image.verify(f, trusted)
                want = case["ok"]
                mptest.eq(info.version, tuple(want["version"]), name)
                mptest.eq(info.security_counter, want["security_counter"], name)
                mptest.eq(info.board, want["board"], name)
                mptest.eq(info.key_index, want["key_index"], name)
                mptest.eq(info.payload_size, want["payload_size"], name)
                n_ok += 1
            else:
                e = mptest.raises(ImageError, image.verify, f, trusted)
                mptest.true(case["error"] in str(e), name, "error was:", str(e), "want:", case["error"])
                n_err += 1
    mptest.true(n_ok >= 4 and n_err >= 12, n_ok, n_err)


def test_board_check_applies_to_p256_images():
    with open(mptest.data_path("p256_hash.img"), "rb") as f:
        mptest.eq(image.verify(f, [keys()["e1"]], "evse-esp32").board, "evse-esp32")
    with open(mptest.data_path("p256_hash.img"), "rb") as f:
        e = mptest.raises(ImageError, image.verify, f, [keys()["e1"]], "evse-rp2040")
    mptest.true("not 'evse-rp2040'" in str(e), str(e))


def test_trusted_key_validation():
    e1 = keys()["e1"]
    off = b"\x04" + e1[1:64] + bytes([e1[64] ^ 1])
    for bad in ([off], [e1[:64]], [e1 + b"\x00"], [b"\x02" + e1[1:33]], [bytes(65)]):
        mptest.raises(ImageError, image.Verifier, bad)
    image.Verifier([keys()["ed1"], e1, bytearray(keys()["e2"])])


def test_spki_and_keyhash_of_both_key_types():
    import hashlib
    e1 = keys()["e1"]
    mptest.eq(len(image.spki(e1)), 91)
    mptest.eq(len(image.spki(keys()["ed1"])), 44)
    # the KEYHASH TLV imgtool wrote is SHA-256 of the P-256 SubjectPublicKeyInfo
    with open(mptest.data_path("p256_hash.img"), "rb") as f:
        f.seek(-160, 2)    # the unprotected TLV area is at the end
        data = f.read()
    mptest.true(hashlib.sha256(image.spki(e1)).digest() in data)


def test_split_keys_mixed_file():
    with open(mptest.data_path("trust_mixed.bin"), "rb") as f:
        data = f.read()
    k = keys()
    mptest.eq(image.split_keys(data), [k["ed1"], k["e1"], k["e2"]])
    mptest.eq(image.split_keys(k["e1"] + k["ed1"]), [k["e1"], k["ed1"]])
    # an Ed25519 key may start with 0x04: it is not a point on P-256
    ed = b"\x04" + k["ed1"][1:]
    mptest.eq(image.split_keys(ed + ed + k["e2"]), [ed, ed, k["e2"]])
    mptest.eq(image.split_keys(ed + ed + ed), [ed, ed, ed])
    for bad in (b"", k["ed1"][:31], k["e1"] + b"\x00", k["ed1"] * 17, k["e1"][:60]):
        mptest.raises(ImageError, image.split_keys, bad)
    mptest.eq(len(image.split_keys(k["e1"] * 16)), 16)
