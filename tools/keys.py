"""Signing keys: `evsectl keygen`.

The signing key is an imgtool-compatible Ed25519 PEM (PKCS#8). The device
trusts raw 32-byte public keys; `/trust/keys.bin` on a board is the
concatenation of the keys it accepts (several during a key rotation).
"""
import hashlib
import os
import subprocess
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def imgtool():
    cand = os.path.join(os.path.dirname(sys.executable), "imgtool")
    return cand if os.path.exists(cand) else "imgtool"


def load_private(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("%s is not an Ed25519 private key" % path)
    return key


def raw_public(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public(path):
    """A trusted key file: raw 32 bytes (.pub), a PEM public key, or a PEM private key."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 32:
        return data
    if len(data) == 44 and data.startswith(_ED25519_SPKI_PREFIX):
        return data[12:]
    if b"PRIVATE KEY" in data:
        return raw_public(load_private(path))
    if b"PUBLIC KEY" in data:
        pub = serialization.load_pem_public_key(data)
        if not isinstance(pub, ed25519.Ed25519PublicKey):
            raise ValueError("%s is not an Ed25519 public key" % path)
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise ValueError("%s: not a raw 32-byte key, nor an Ed25519 PEM key" % path)


def keyhash(raw):
    """MCUboot KEYHASH: SHA-256 of the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(_ED25519_SPKI_PREFIX + raw).digest()


def keygen(base, force=False):
    pem, pub = base + ".pem", base + ".pub"
    for p in (pem, pub):
        if os.path.exists(p) and not force:
            raise FileExistsError("%s exists; refusing to overwrite a key (use --force)" % p)
    os.makedirs(os.path.dirname(os.path.abspath(pem)), exist_ok=True)
    subprocess.run([imgtool(), "keygen", "-k", pem, "-t", "ed25519"], check=True)
    os.chmod(pem, 0o600)
    raw = raw_public(load_private(pem))
    with open(pub, "wb") as f:
        f.write(raw)
    return pem, pub, raw
