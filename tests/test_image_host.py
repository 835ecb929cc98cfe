"""Host-side (CPython) checks of the image fixtures that the device tests use
(tests/prep/images.py): imgtool itself accepts the valid ones and refuses the
tampered ones, and the key/TLV facts the device verifier relies on hold."""
import hashlib
import json
import os
import struct
import subprocess

import pytest

from tests.prep import images

SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")   # as in firmware/ota/image.py


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ota-images"))
    images.make(d)
    with open(os.path.join(d, "images.json")) as f:
        man = json.load(f)
    return d, man


def _imgtool_verify(d, key, name):
    p = subprocess.run([images.IMGTOOL, "verify", "-k", os.path.join(d, key), os.path.join(d, name)],
                       capture_output=True, text=True)
    return p.returncode == 0 and "correctly validated" in p.stdout, p.stdout + p.stderr


def test_rfc8032_vectors_copied_right():
    images.check_rfc8032()


def test_imgtool_accepts_the_valid_images(fx):
    d, man = fx
    names = [n for n, c in man.items() if "ok" in c and "file" not in c]
    assert len(names) >= 5
    for name in names:
        key = "k%d.pem" % (man[name]["ok"]["key_index"] + 1 if man[name].get("keys") else 1)
        ok, out = _imgtool_verify(d, key, name)
        assert ok, (name, out)


@pytest.mark.parametrize("name", ["tampered_payload.img", "tampered_sec_cnt.img", "tampered_board.img",
                                  "tampered_sig.img", "wrong_key.img", "bad_magic.img"])
def test_imgtool_refuses_the_tampered_images(fx, name):
    d, _ = fx
    ok, out = _imgtool_verify(d, "k1.pem", name)
    assert not ok, out


def test_keyhash_is_sha256_of_the_der_spki(fx):
    d, _ = fx
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(d, "k1.pem"), "rb") as f:
        pub = serialization.load_pem_private_key(f.read(), None).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = open(os.path.join(d, "keys.bin"), "rb").read()[:32]
    assert der == SPKI_PREFIX + raw
    img = open(os.path.join(d, "valid_min.img"), "rb").read()
    found = {t: (pos, n) for area, pos, t, n in images.tlvs(img)}
    pos, n = found[0x01]
    assert img[pos + 4:pos + 4 + n] == hashlib.sha256(der).digest()
    full = open(os.path.join(d, "valid_full.img"), "rb").read()
    found = {t: (pos, n) for area, pos, t, n in images.tlvs(full)}
    pos, n = found[0x02]
    assert full[pos + 4:pos + 4 + n] == der


def test_signature_is_ed25519_over_the_sha256_digest(fx):
    d, _ = fx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    img = open(os.path.join(d, "valid_board.img"), "rb").read()
    hsz, psz, isz = struct.unpack_from("<HHI", img, 8)
    digest = hashlib.sha256(img[:hsz + isz + psz]).digest()
    t = {t: img[pos + 4:pos + 4 + n] for area, pos, t, n in images.tlvs(img)}
    assert t[0x10] == digest
    assert t[0xA0] == b"evse-esp32" and struct.unpack("<I", t[0x50])[0] == 3
    key = Ed25519PublicKey.from_public_bytes(open(os.path.join(d, "keys.bin"), "rb").read()[:32])
    key.verify(t[0x24], digest)   # raises if the signature were over anything else
