"""CPython fixture generator for tests/device/test_ocpp_sec.py and
tests/test_ocpp_certs.py: root certificates made by `cryptography` (through
tools/certs.build_cert) and their certificateHashData computed here, apart
from the device, with cryptography's OCSP CertID (RFC 6960, what the
whitepaper's edition 3 refers to).

make(d) writes into directory d: <name>.pem for each certificate and
expected.json {"now": s, "hash": {name: certificateHashData}}."""
import datetime
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import ocsp

from tools import certs

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 6, 1, tzinfo=UTC)


def _t(y, m=1, d=1):
    return datetime.datetime(y, m, d, tzinfo=UTC)


def hash_data(cert):
    """certificateHashData of a self-signed root, by cryptography's OCSP CertID."""
    r = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, hashes.SHA256()).build()
    return {"hashAlgorithm": "SHA256", "issuerNameHash": r.issuer_name_hash.hex(),
            "issuerKeyHash": r.issuer_key_hash.hex(), "serialNumber": format(r.serial_number, "X")}


def roots(d, now=None):
    """The certificates of the tests ({name: x509.Certificate}), PEM files in d."""
    now = now or NOW
    life = dict(not_before=now - datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=3650))
    p256 = lambda: ec.generate_private_key(ec.SECP256R1())   # noqa: E731
    out = {}

    def cert(name, cn, key, **kw):
        kw.setdefault("ca", True)
        for k, v in life.items():
            kw.setdefault(k, v)
        c = certs.build_cert(certs.name(cn, "EVSE Test"), key, **kw)
        with open(os.path.join(d, name + ".pem"), "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
        out[name] = c
        return c

    cert("mf", "Manufacturer Root", p256(), serial=4095)             # serial 'FFF'
    cert("mf_ed", "Manufacturer Root Ed25519", ed25519.Ed25519PrivateKey.generate())
    cert("cs1", "CSMS Root 1", p256(), serial=0x80 << 120)          # DER INTEGER with a 00 first byte
    cert("cs2", "CSMS Root 2", p256(), serial=1)
    cert("cs3", "CSMS Root 3", p256())
    cert("cs4", "CSMS Root 4", p256())
    cert("cs5", "CSMS Root 5", p256())
    cert("cs_ed", "CSMS Root Ed25519", ed25519.Ed25519PrivateKey.generate())
    cert("notca", "Not A CA", p256(), ca=False)
    cert("nocertsign", "No CertSign", p256(), key_usage=dict(digital_signature=True, crl_sign=True))
    cert("noku", "No KeyUsage", p256(), key_usage=None)
    cert("expired", "Old Root", p256(), not_before=_t(2010), not_after=now - datetime.timedelta(days=1))
    cert("future", "New Root", p256(), not_before=now + datetime.timedelta(days=1))
    # a "root" whose signature is by another key (self-signed in name only)
    k = p256()
    forged = certs.build_cert(certs.name("Forged Root", "EVSE Test"), k.public_key(), issuer_key=p256(),
                              ca=True, **life)
    with open(os.path.join(d, "forged.pem"), "wb") as f:
        f.write(forged.public_bytes(serialization.Encoding.PEM))
    out["forged"] = forged
    return out


def make(d):
    rs = roots(d)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"now": int(NOW.timestamp()), "hash": {n: hash_data(c) for n, c in rs.items()}}, f)
