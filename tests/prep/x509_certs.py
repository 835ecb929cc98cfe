"""CPython fixture generator for the X.509 device tests (tests/device/test_x509.py):
certificates made here by `cryptography` (through tools/certs.build_cert).

make(d) writes into directory d:
  *.der, *.pem      certificates
  fields.json       {name: fields of the certificate as cryptography reads them}
  chains.json       {case: {"leaf", "roots", "inter", "now", "ok" | "error"}}
  fw.bin, fw.sig    a firmware file and its OCPP signature (base64) by the
                    signing key of leaf_ok.der (tools/certs.sign_bytes)
"""
import datetime
import hashlib
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ObjectIdentifier

from tools import certs

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 6, 1, tzinfo=UTC)


def _t(y, m=1, d=1):
    return datetime.datetime(y, m, d, tzinfo=UTC)


def _ku(c):
    try:
        ku = c.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    bits = sum(1 << i for i, n in enumerate(names) if getattr(ku, n))
    if ku.key_agreement:
        bits |= (1 << 7) * ku.encipher_only | (1 << 8) * ku.decipher_only
    return bits


def fields(c):
    bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
    pub = c.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        kt, raw = "p256", pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        kt, raw = "ed25519", pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"subject": c.subject.public_bytes().hex(), "issuer": c.issuer.public_bytes().hex(),
            "not_before": int(c.not_valid_before_utc.timestamp()),
            "not_after": int(c.not_valid_after_utc.timestamp()),
            "is_ca": bc.ca, "path_len": bc.path_length, "key_usage": _ku(c), "key_type": kt,
            "public_key": raw.hex(), "tbs_sha256": hashlib.sha256(c.tbs_certificate_bytes).hexdigest(),
            "signature": c.signature.hex()}


def make(d):
    out = {}
    keys = {}

    def cert(name, cn, key, issuer=None, ikey=None, **kw):
        c = certs.build_cert(certs.name(cn, "EVSE Test"), key, issuer=issuer, issuer_key=ikey, **kw)
        der = c.public_bytes(serialization.Encoding.DER)
        with open(os.path.join(d, name + ".der"), "wb") as f:
            f.write(der)
        with open(os.path.join(d, name + ".pem"), "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
        out[name] = c
        keys[name] = key
        return c

    p256 = lambda: ec.generate_private_key(ec.SECP256R1())   # noqa: E731
    edk = ed25519.Ed25519PrivateKey.generate
    life = dict(not_before=_t(2025), not_after=_t(2060))      # 2060: GeneralizedTime
    root = cert("root", "Root CA", p256(), ca=True, path_len=None, **life)
    k_root = keys["root"]
    cert("root_ed", "Root CA Ed25519", edk(), ca=True, path_len=0, **life)
    cert("root_pl0", "Root CA PL0", p256(), ca=True, path_len=0, **life)
    cert("root_expired", "Root CA Old", p256(), ca=True, not_before=_t(2010), not_after=_t(2026, 1, 1))
    cert("root_nocertsign", "Root CA NoSign", p256(), ca=True,
         key_usage=dict(digital_signature=True, crl_sign=True), **life)
    cert("root_noku", "Root CA NoKU", p256(), ca=True, key_usage=None, **life)
    cert("notca", "Not A CA", p256(), ca=False, **life)
    # same name as "root", another key: its leaves carry a bad signature for root
    cert("root_impostor", "Root CA", p256(), ca=True, **life)

    lv = dict(not_before=_t(2026), not_after=_t(2031))
    cert("leaf_ok", "Firmware Signing", p256(), root, k_root, **lv)
    cert("leaf_ed", "Firmware Signing Ed25519", edk(), root, k_root, **lv)
    cert("leaf_by_ed_root", "Firmware Signing 2", p256(), out["root_ed"], keys["root_ed"], **lv)
    cert("leaf_other_issuer", "Firmware Signing 3", p256(), out["root_pl0"], keys["root_pl0"], **lv)
    cert("leaf_expired", "Firmware Signing Old", p256(), root, k_root, not_before=_t(2020), not_after=_t(2026, 5, 31))
    cert("leaf_future", "Firmware Signing New", p256(), root, k_root, not_before=_t(2026, 6, 2), not_after=_t(2030))
    cert("leaf_by_notca", "Firmware Signing 4", p256(), out["notca"], keys["notca"], **lv)
    cert("leaf_by_nocertsign", "Firmware Signing 5", p256(), out["root_nocertsign"], keys["root_nocertsign"], **lv)
    cert("leaf_by_noku", "Firmware Signing 6", p256(), out["root_noku"], keys["root_noku"], **lv)
    cert("leaf_bad_sig", "Firmware Signing 7", p256(), out["root_impostor"], keys["root_impostor"], **lv)
    cert("leaf_by_expired_root", "Firmware Signing 8", p256(), out["root_expired"], keys["root_expired"],
         not_before=_t(2024), not_after=_t(2030))
    cert("leaf_no_digsig", "Firmware Signing 9", p256(), root, k_root, key_usage=dict(key_encipherment=True), **lv)
    cert("leaf_crit_ext", "Firmware Signing 10", p256(), root, k_root,
         extra=[(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True)], **lv)
    cert("leaf_noncrit_ext", "Firmware Signing 11", p256(), root, k_root,
         extra=[(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), False)], **lv)
    cert("leaf_rsa", "Firmware Signing RSA", rsa.generate_private_key(65537, 2048), root, k_root, **lv)
    cert("leaf_p384", "Firmware Signing P384", ec.generate_private_key(ec.SECP384R1()), root, k_root, **lv)
    # intermediate chains
    inter = cert("inter", "Intermediate CA", p256(), root, k_root, ca=True, path_len=0, **lv)
    cert("leaf_via_inter", "Firmware Signing 12", p256(), inter, keys["inter"], **lv)
    inter2 = cert("inter_pl0root", "Intermediate CA 2", p256(), out["root_pl0"], keys["root_pl0"], ca=True, **lv)
    cert("leaf_via_inter_pl0root", "Firmware Signing 13", p256(), inter2, keys["inter_pl0root"], **lv)
    cert("leaf_under_notca_inter", "Firmware Signing 14", p256(), out["leaf_ok"], keys["leaf_ok"], **lv)

    with open(os.path.join(d, "fields.json"), "w") as f:
        json.dump({n: fields(c) for n, c in out.items() if n not in ("leaf_rsa", "leaf_p384", "leaf_crit_ext")}, f, indent=1)

    now = int(NOW.timestamp())

    def ok(leaf, roots, inter=(), t=now):
        return {"leaf": leaf, "roots": list(roots), "inter": list(inter), "now": t, "ok": leaf}

    def bad(leaf, roots, err, inter=(), t=now):
        return {"leaf": leaf, "roots": list(roots), "inter": list(inter), "now": t, "error": err}

    chains = {
        "valid": ok("leaf_ok", ["root"]),
        "valid_among_roots": ok("leaf_ok", ["root_ed", "root_pl0", "root"]),
        "valid_no_clock": ok("leaf_ok", ["root"], t=None),
        "valid_ed25519_leaf": ok("leaf_ed", ["root"]),
        "valid_by_ed25519_root": ok("leaf_by_ed_root", ["root_ed"]),
        "valid_root_without_keyusage": ok("leaf_by_noku", ["root_noku"]),
        "valid_noncritical_unknown_ext": ok("leaf_noncrit_ext", ["root"]),
        "valid_via_intermediate": ok("leaf_via_inter", ["root"], ["inter"]),
        "valid_impostor_root_beside": ok("leaf_ok", ["root_impostor", "root"]),
        "expired_no_clock": ok("leaf_expired", ["root"], t=None),
        "wrong_issuer": bad("leaf_other_issuer", ["root"], "not an installed root"),
        "no_roots": bad("leaf_ok", [], "no usable root"),
        "expired": bad("leaf_expired", ["root"], "expired"),
        "not_yet_valid": bad("leaf_future", ["root"], "not yet valid"),
        "issuer_not_ca": bad("leaf_by_notca", ["notca"], "not a CA"),
        "issuer_no_keycertsign": bad("leaf_by_nocertsign", ["root_nocertsign"], "keyCertSign"),
        "bad_signature": bad("leaf_bad_sig", ["root"], "bad signature"),
        "root_expired": bad("leaf_by_expired_root", ["root_expired"], "root certificate 'Root CA Old' expired"),
        "leaf_no_digital_signature": bad("leaf_no_digsig", ["root"], "digitalSignature"),
        "unknown_critical_extension": bad("leaf_crit_ext", ["root"], "critical extension"),
        "rsa_key": bad("leaf_rsa", ["root"], "unsupported public key type"),
        "p384_key": bad("leaf_p384", ["root"], "unsupported public key type"),
        "intermediate_missing": bad("leaf_via_inter", ["root"], "not an installed root"),
        "path_len_exceeded": bad("leaf_via_inter_pl0root", ["root_pl0"], "pathLenConstraint",
                                 ["inter_pl0root"]),
        "leaf_as_issuer": bad("leaf_under_notca_inter", ["root"], "not a CA", ["leaf_ok"]),
    }
    # what `evsectl certs root` and `evsectl certs signing` write, as the device reads it
    pki = os.path.join(d, "pki")
    rc, rk = certs.make_root(pki, "EVSE Manufacturer Root", "EVSE Test")
    sc, _ = certs.make_signing(pki, rc, rk, "EVSE Firmware Signing", "EVSE Test")
    for src, dst in ((rc, "pki_root"), (sc, "pki_signing")):
        with open(os.path.join(d, dst + ".der"), "wb") as f:
            f.write(certs.load_cert(src).public_bytes(serialization.Encoding.DER))
    chains["evsectl_certs"] = ok("pki_signing", ["pki_root"], t=int(datetime.datetime.now(UTC).timestamp()))
    chains["evsectl_root_is_not_a_signing_cert"] = bad("pki_root", ["pki_root"], "lacks digitalSignature")
    with open(os.path.join(d, "chains.json"), "w") as f:
        json.dump(chains, f, indent=1)

    fw = os.urandom(3000)
    with open(os.path.join(d, "fw.bin"), "wb") as f:
        f.write(fw)
    with open(os.path.join(d, "fw.sig"), "w") as f:
        f.write(certs.sign_bytes(keys["leaf_ok"], fw))
    with open(os.path.join(d, "fw_ed.sig"), "w") as f:
        f.write(certs.sign_bytes(keys["leaf_ed"], fw))
    # a PEM bundle: text, then two certificates (the first one counts)
    with open(os.path.join(d, "bundle.pem"), "wb") as f:
        f.write(b"Manufacturer root, installed 2026\r\n")
        f.write(out["leaf_ok"].public_bytes(serialization.Encoding.PEM).replace(b"\n", b"\r\n"))
        f.write(root.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    o = sys.argv[1] if len(sys.argv) > 1 else "/tmp/x509-fixtures"
    os.makedirs(o, exist_ok=True)
    make(o)
    print(o)
