"""Host tools for ECDSA P-256 and certificates: `evsectl keygen --type
ecdsa-p256`, `evsectl release` with a P-256 key (checked by imgtool and by the
device verifier), `evsectl certs` (root, signing certificate, OCPP firmware
signature) and tools.keys reading every key format it documents."""
import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tools import certs, keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVSECTL = [sys.executable, "-m", "tools.evsectl"]


def run(*args):
    return subprocess.run(EVSECTL + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def p256(tmp_path_factory):
    d = tmp_path_factory.mktemp("p256")
    p = run("keygen", "--type", "ecdsa-p256", d / "k")
    assert p.returncode == 0, p.stderr
    assert "raw 65 bytes" in p.stdout
    p = run("release", "--key", d / "k.pem", "--version", "3.0.1", "--board", "sim",
            "--security-counter", "2", "--out", d / "out")
    assert p.returncode == 0, p.stderr
    return d


def test_keygen_p256_writes_pem_and_65_byte_point(p256):
    pub = (p256 / "k.pub").read_bytes()
    assert len(pub) == 65 and pub[0] == 4
    assert keys.load_public(str(p256 / "k.pem")) == pub
    assert keys.load_public(str(p256 / "k.pub")) == pub
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    assert oct(os.stat(p256 / "k.pem").st_mode & 0o777) == "0o600"
    p = run("keygen", "--type", "ecdsa-p256", p256 / "k")      # bad input: one line, exit 2
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr
    assert (p256 / "k.pub").read_bytes() == pub


def test_release_with_p256_key_is_an_ecdsa_image(p256):
    desc = json.loads((p256 / "out" / "evse-sim-3.0.1.json").read_text())
    img = (p256 / "out" / "evse-sim-3.0.1.img").read_bytes()
    assert desc["key_type"] == "ecdsa-p256"
    pub = (p256 / "k.pub").read_bytes()
    assert desc["key_hash"] == hashlib.sha256(keys.spki(pub)).hexdigest()
    assert bytes.fromhex(desc["key_hash"]) in img               # KEYHASH TLV
    assert b"\x22\x00" in img[-120:]                             # ECDSA_SIG TLV 0x22


def test_verify_p256_image_and_mixed_keys(p256, tmp_path):
    img = p256 / "out" / "evse-sim-3.0.1.img"
    ed = run("keygen", tmp_path / "ed")
    assert ed.returncode == 0
    p = run("verify", img, "--key", tmp_path / "ed.pub", "--key", p256 / "k.pub", "--board", "sim")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "signed by        key 2" in p.stdout and "security counter 2" in p.stdout
    other = run("keygen", "--type", "ecdsa-p256", tmp_path / "other")
    assert other.returncode == 0
    p = run("verify", img, "--key", tmp_path / "other.pub")
    assert p.returncode == 1 and "untrusted key" in p.stdout


def test_load_public_formats(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key()
    point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    for name, data in (("der", pub.public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)),
                       ("pem", pub.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)),
                       ("raw", point)):
        (tmp_path / name).write_bytes(data)
        assert keys.load_public(str(tmp_path / name)) == point, name
    bad = bytearray(point)
    bad[-1] ^= 1
    (tmp_path / "bad").write_bytes(bytes(bad))
    with pytest.raises(ValueError):
        keys.load_public(str(tmp_path / "bad"))
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    (tmp_path / "p384").write_bytes(p384.public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ValueError, match="neither an Ed25519 nor an ECDSA P-256"):
        keys.load_public(str(tmp_path / "p384"))


def test_certs_root_signing_and_file_signature(tmp_path):
    assert run("certs", "root", "--out", tmp_path / "r", "--name", "ACME Root").returncode == 0
    p = run("certs", "signing", "--root", tmp_path / "r" / "root.pem", "--root-key", tmp_path / "r" / "root.key",
            "--out", tmp_path / "s", "--name", "ACME FW")
    assert p.returncode == 0, p.stderr
    root = x509.load_pem_x509_certificate((tmp_path / "r" / "root.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "s" / "signing.pem").read_bytes())
    leaf.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert oct(os.stat(tmp_path / "s" / "signing.key").st_mode & 0o777) == "0o600"
    fw = tmp_path / "fw.bin"
    fw.write_bytes(os.urandom(5000))
    p = run("certs", "sign-file", "--key", tmp_path / "s" / "signing.key", fw)
    assert p.returncode == 0, p.stderr
    sig = p.stdout.strip()
    # the whitepaper signature: ECDSA P-256 over SHA-256 of the file, DER, base64
    leaf.public_key().verify(base64.b64decode(sig), fw.read_bytes(), ec.ECDSA(hashes.SHA256()))
    p = run("certs", "verify-file", "--cert", tmp_path / "s" / "signing.pem", "--root", tmp_path / "r" / "root.pem",
            "--signature", sig, fw)
    assert p.returncode == 0, p.stderr
    fw.write_bytes(b"tampered")
    p = run("certs", "verify-file", "--cert", tmp_path / "s" / "signing.pem", "--root", tmp_path / "r" / "root.pem",
            "--signature", sig, fw)
    assert p.returncode == 1 and "bad signature" in p.stderr
    p = run("certs", "verify-file", "--cert", tmp_path / "s" / "signing.pem", "--root", tmp_path / "r" / "root.pem",
            "--signature", "not base64!", fw)                    # bad input, not a check: exit 2
    assert p.returncode == 2 and "REJECTED" not in p.stderr and "Traceback" not in p.stderr
    p = run("certs", "root", "--out", tmp_path / "r")            # bad input: exit 2
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr
    # one command for the release engineer: signature + certificate for the CSMS
    fw.write_bytes(os.urandom(3000))
    p = run("certs", "sign-file", "--key", tmp_path / "s" / "signing.key", "--cert",
            tmp_path / "s" / "signing.pem", "--location", "https://fw.example/evse.img", "--json", fw)
    assert p.returncode == 0, p.stderr
    f = json.loads(p.stdout)
    assert f["location"] == "https://fw.example/evse.img"
    assert f["signingCertificate"] == (tmp_path / "s" / "signing.pem").read_text()
    leaf.public_key().verify(base64.b64decode(f["signature"]), fw.read_bytes(), ec.ECDSA(hashes.SHA256()))
    p = run("certs", "sign-file", "--key", tmp_path / "s" / "signing.key", "--cert",
            tmp_path / "r" / "root.pem", fw)                     # not the key's certificate
    assert p.returncode == 2 and "is not the certificate of the key" in p.stderr, p.stderr
    p = run("certs", "sign-file", "--key", tmp_path / "s" / "signing.key", "--cert",
            tmp_path / "s" / "signing.pem", fw)
    assert p.returncode == 0 and "BEGIN CERTIFICATE" in p.stdout and "firmware.signature" in p.stdout


def test_certs_signing_by_a_non_root_is_refused_by_the_host_check(tmp_path):
    certs.make_root(str(tmp_path / "a"))
    certs.make_root(str(tmp_path / "b"))
    cp, kp = certs.make_signing(str(tmp_path / "s"), str(tmp_path / "a" / "root.pem"), str(tmp_path / "a" / "root.key"))
    sig = certs.sign_file(kp, cp)
    with pytest.raises(ValueError, match="not issued by the root"):
        certs.verify_file(cp, str(tmp_path / "b" / "root.pem"), sig, cp)
