"""Signing keys: `evsectl keygen [--type ed25519|ecdsa-p256]`.

A signing key is an imgtool-compatible PEM (PKCS#8 for Ed25519, imgtool's
EC PRIVATE KEY/PKCS#8 for ECDSA P-256). The device trusts raw public keys:
32 bytes for Ed25519, the 65-byte uncompressed point 0x04 | X | Y for P-256.
`/trust/keys.bin` on a board is the concatenation of the keys it accepts
(several during a key rotation, both types may be mixed; the device splits
the file with firmware/ota/image.split_keys, see docs/image-format.md).
"""
import hashlib
import os
import subprocess
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

KEY_TYPES = ("ed25519", "ecdsa-p256")
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def imgtool():
    cand = os.path.join(os.path.dirname(sys.executable), "imgtool")
    return cand if os.path.exists(cand) else "imgtool"


def _check_type(key, path):
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return key
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and \
            isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("%s is neither an Ed25519 nor an ECDSA P-256 key" % path)


def load_private(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return _check_type(key, path)


def key_type(key):
    """'ed25519' or 'ecdsa-p256' of a private or public key (or raw bytes)."""
    if isinstance(key, (bytes, bytearray)):
        return "ed25519" if len(key) == 32 else "ecdsa-p256"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    return "ecdsa-p256"


def _raw(pub):
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def raw_public(key):
    """The raw key a board trusts: 32 bytes (Ed25519) or 65 bytes (P-256)."""
    return _raw(key.public_key())


def load_public(path):
    """A trusted key file: raw 32 (Ed25519) or 65 (P-256 point) bytes (.pub),
    a DER SubjectPublicKeyInfo, a PEM public key, or a PEM private key."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 32:
        return data
    if len(data) == 65 and data[0] == 4:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)   # on the curve
        return data
    if len(data) == 44 and data.startswith(_ED25519_SPKI_PREFIX):
        return data[12:]
    if len(data) == 91 and data.startswith(_P256_SPKI_PREFIX):
        return load_public_bytes(data[26:], path)
    if b"PRIVATE KEY" in data:
        return raw_public(load_private(path))
    if b"PUBLIC KEY" in data:
        return _raw(_check_type(serialization.load_pem_public_key(data), path))
    raise ValueError("%s: not a raw 32-byte Ed25519 or 65-byte P-256 key, nor a PEM key" % path)


def load_public_bytes(point, path="key"):
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("%s: not a point on P-256" % path)
    return point


def spki(raw):
    """DER SubjectPublicKeyInfo of a raw key (32-byte Ed25519, 65-byte P-256)."""
    return (_ED25519_SPKI_PREFIX if len(raw) == 32 else _P256_SPKI_PREFIX) + raw


def keyhash(raw):
    """MCUboot KEYHASH: SHA-256 of the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki(raw)).digest()


def keygen(base, force=False, key_type="ed25519"):
    if key_type not in KEY_TYPES:
        raise ValueError("key type %r: expected one of %s" % (key_type, ", ".join(KEY_TYPES)))
    pem, pub = base + ".pem", base + ".pub"
    for p in (pem, pub):
        if os.path.exists(p) and not force:
            raise FileExistsError("%s exists; refusing to overwrite a key (use --force)" % p)
    os.makedirs(os.path.dirname(os.path.abspath(pem)), exist_ok=True)
    if force and os.path.exists(pem):
        os.unlink(pem)
    subprocess.run([imgtool(), "keygen", "-k", pem, "-t", key_type], check=True)
    os.chmod(pem, 0o600)
    raw = raw_public(load_private(pem))
    with open(pub, "wb") as f:
        f.write(raw)
    return pem, pub, raw
