"""`evsectl certs`: a manufacturer root and firmware signing certificates, and
the OCPP firmware signature of a file, for tests and small fleets.

    evsectl certs root    --out DIR [--name CN] [--org O] [--days N] [--type ecdsa-p256|ed25519]
    evsectl certs signing --root DIR/root.pem --root-key DIR/root.key --out DIR2 [--name CN] [--days N]
    evsectl certs sign-file --key DIR2/signing.key FILE      -> base64 signature on stdout
    evsectl certs sign-file --key DIR2/signing.key --cert DIR2/signing.pem [--location URL] [--json] FILE
                                                      -> signature + certificate for the CSMS
    evsectl certs verify-file --cert DIR2/signing.pem --root DIR/root.pem --signature B64 FILE

The root is a self-signed CA (basicConstraints cA, pathLen 0, keyUsage
keyCertSign|cRLSign); the signing certificate is an end entity (cA false,
keyUsage digitalSignature) issued by it. Both are what firmware/ota/x509.py
accepts. The firmware signature follows the OCPP security whitepaper
(SignedUpdateFirmware): ECDSA P-256 over SHA-256 of the file, the DER
ECDSA-Sig-Value in base64. Private keys are written PKCS#8 PEM, mode 0600.
This is a small PKI for tests and small fleets, not a hardware-backed CA.
"""
import argparse
import base64
import datetime
import hashlib
import os
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ecdsa-p256", "ed25519")


def new_key(key_type="ecdsa-p256"):
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError("key type %r: expected one of %s" % (key_type, ", ".join(KEY_TYPES)))


def name(cn, org=None):
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def build_cert(subject, key, issuer=None, issuer_key=None, ca=False, path_len=None,
               key_usage="auto", not_before=None, not_after=None, days=3650, serial=None,
               extra=()):
    """An x509.Certificate for `key` (a private or public key) with subject
    `subject` (x509.Name), signed by issuer_key (self-signed when issuer is
    None). key_usage: "auto" (keyCertSign|cRLSign for a CA, digitalSignature
    otherwise), None (no extension) or a dict of KeyUsage flags. extra:
    (extension, critical) pairs."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    signer = issuer_key if issuer_key is not None else key
    nb = not_before or (_now() - datetime.timedelta(minutes=5))
    na = not_after or (nb + datetime.timedelta(days=days))
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer.subject if issuer is not None else subject)
         .public_key(pub)
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(nb)
         .not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), critical=True))
    if key_usage == "auto":
        key_usage = dict(key_cert_sign=True, crl_sign=True) if ca else dict(digital_signature=True)
    if key_usage is not None:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                     encipher_only=False, decipher_only=False)
        flags.update(key_usage)
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    for ext, crit in extra:
        b = b.add_extension(ext, critical=crit)
    algo = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(signer, algo)


def _write_key(path, key, force):
    if os.path.exists(path) and not force:
        raise FileExistsError("%s exists; refusing to overwrite a key (use --force)" % path)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_cert(path, cert, force):
    if os.path.exists(path) and not force:
        raise FileExistsError("%s exists; refusing to overwrite (use --force)" % path)
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def load_cert(path):
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def make_root(out, cn="Manufacturer Root CA", org=None, days=7300, key_type="ecdsa-p256", force=False):
    """Write OUT/root.pem and OUT/root.key; returns (cert path, key path)."""
    os.makedirs(out, exist_ok=True)
    key = new_key(key_type)
    cert = build_cert(name(cn, org), key, ca=True, path_len=0, days=days)
    cp, kp = os.path.join(out, "root.pem"), os.path.join(out, "root.key")
    _write_key(kp, key, force)
    _write_cert(cp, cert, force)
    return cp, kp


def make_signing(out, root_cert, root_key, cn="Firmware Signing", org=None, days=1825,
                 key_type="ecdsa-p256", force=False):
    """Write OUT/signing.pem and OUT/signing.key, issued by the root."""
    os.makedirs(out, exist_ok=True)
    issuer = load_cert(root_cert)
    ikey = load_key(root_key)
    key = new_key(key_type)
    cert = build_cert(name(cn, org), key, issuer=issuer, issuer_key=ikey, days=days)
    cp, kp = os.path.join(out, "signing.pem"), os.path.join(out, "signing.key")
    _write_key(kp, key, force)
    _write_cert(cp, cert, force)
    return cp, kp


def sign_bytes(key, data):
    """OCPP firmware signature of data: base64 of the DER ECDSA P-256 /
    SHA-256 signature (an Ed25519 key signs the SHA-256 digest of data)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError("signing key is not on P-256")
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(hashlib.sha256(data).digest())
    else:
        raise ValueError("signing key must be ECDSA P-256 or Ed25519")
    return base64.b64encode(sig).decode()


def sign_file(key_path, path):
    with open(path, "rb") as f:
        data = f.read()
    return sign_bytes(load_key(key_path), data)


MFR_ROOT_PATH = "ocpp/certs/M0.der"   # on the board's flash (firmware/ocpp/certstore.py)


def certstore_file(path):
    """The bytes of a Manufacturer root as firmware/ocpp/certstore.py stores
    it (DER + big-endian CRC-32 of the DER) from a PEM or DER file. Refuses
    (ValueError) a certificate that is not a CA or has a key the device
    cannot check (P-256 and Ed25519 only)."""
    import zlib
    try:
        cert = load_cert(path)
    except ValueError as e:
        raise ValueError("%s: not a PEM or DER certificate (%s)" % (path, e))
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError("%s: not a CA certificate (basicConstraints cA): a Manufacturer root "
                         "issues the firmware signing certificates" % path)
    pub = cert.public_key()
    if not (isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
            or isinstance(pub, ed25519.Ed25519PublicKey)):
        raise ValueError("%s: key type not supported on the device (P-256 or Ed25519)" % path)
    der = cert.public_bytes(serialization.Encoding.DER)
    if len(der) > 4096:
        raise ValueError("%s: certificate larger than 4096 bytes" % path)
    return der + (zlib.crc32(der) & 0xFFFFFFFF).to_bytes(4, "big")


def release_signature(key_path, cert_path, path):
    """What the CSMS operator pastes into SignedUpdateFirmware for the file at
    `path`: {"signature": base64, "signingCertificate": PEM text}. The
    certificate must be the one of the key (checked)."""
    key = load_key(key_path)
    cert = load_cert(cert_path)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise ValueError("%s is not the certificate of the key %s" % (cert_path, key_path))
    return {"signature": sign_file(key_path, path),
            "signingCertificate": cert.public_bytes(serialization.Encoding.PEM).decode()}


class Rejected(ValueError):
    """verify_file's answer "no" (the check ran, the file or certificate
    failed it), as opposed to bad input (unreadable files, bad base64)."""


def verify_file(cert_path, root_path, signature_b64, path):
    """Host-side check (cryptography): the signing certificate is issued by the
    root and the signature of the file verifies. Raises Rejected (a
    ValueError) when either does not, ValueError/OSError on bad input."""
    cert, root = load_cert(cert_path), load_cert(root_path)
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise Rejected("certificate is not issued by the root: %s" % (e or "bad signature"))
    with open(path, "rb") as f:
        data = f.read()
    sig = base64.b64decode(signature_b64, validate=True)
    pub = cert.public_key()
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        else:
            pub.verify(sig, hashlib.sha256(data).digest())
    except InvalidSignature:
        raise Rejected("bad signature of %s" % path)
    return True


def build_parser(p=None):
    p = p or argparse.ArgumentParser(prog="evsectl certs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="certs_cmd", metavar="ACTION")
    sub.required = True
    s = sub.add_parser("root", help="make a self-signed manufacturer root CA (root.pem, root.key)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--name", default="Manufacturer Root CA", help="commonName")
    s.add_argument("--org", default=None, help="organizationName")
    s.add_argument("--days", type=int, default=7300, help="validity in days (default 7300)")
    s.add_argument("--type", default="ecdsa-p256", choices=KEY_TYPES, help="key type")
    s.add_argument("--force", action="store_true", help="overwrite existing files")
    s = sub.add_parser("signing", help="make a firmware signing certificate issued by the root")
    s.add_argument("--root", required=True, help="root certificate (PEM)")
    s.add_argument("--root-key", required=True, help="root private key (PEM)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--name", default="Firmware Signing", help="commonName")
    s.add_argument("--org", default=None, help="organizationName")
    s.add_argument("--days", type=int, default=1825, help="validity in days (default 1825)")
    s.add_argument("--type", default="ecdsa-p256", choices=KEY_TYPES, help="key type")
    s.add_argument("--force", action="store_true", help="overwrite existing files")
    s = sub.add_parser("sign-file", help="print the OCPP firmware signature (base64) of a file")
    s.add_argument("--key", required=True, help="signing private key (PEM)")
    s.add_argument("--cert", default=None,
                   help="signing certificate (PEM): also print it, and the SignedUpdateFirmware "
                        "firmware fields, for the CSMS")
    s.add_argument("--location", default=None,
                   help="with --cert: the URL the charger downloads the file from")
    s.add_argument("--json", action="store_true", help="with --cert: one JSON object")
    s.add_argument("file")
    s = sub.add_parser("verify-file", help="check a file's signature and its certificate (host side)")
    s.add_argument("--cert", required=True, help="signing certificate (PEM)")
    s.add_argument("--root", required=True, help="root certificate (PEM)")
    s.add_argument("--signature", required=True, help="base64 signature")
    s.add_argument("file")
    return p


def main(a):
    if a.certs_cmd == "root":
        cp, kp = make_root(a.out, a.name, a.org, a.days, a.type, a.force)
        print("root certificate : %s  (install on chargers: OCPP InstallCertificate ManufacturerRootCertificate)" % cp)
        print("root key         : %s  (keep it offline)" % kp)
    elif a.certs_cmd == "signing":
        cp, kp = make_signing(a.out, a.root, a.root_key, a.name, a.org, a.days, a.type, a.force)
        print("signing certificate : %s  (sent with SignedUpdateFirmware)" % cp)
        print("signing key         : %s  (keep it secret)" % kp)
    elif a.certs_cmd == "sign-file":
        if a.cert is None:
            print(sign_file(a.key, a.file))
            return 0
        r = release_signature(a.key, a.cert, a.file)
        if a.location:
            r["location"] = a.location
        if a.json:
            import json
            print(json.dumps(r, indent=1))
            return 0
        print("signature (SignedUpdateFirmware firmware.signature):")
        print(r["signature"])
        print("signingCertificate (firmware.signingCertificate):")
        sys.stdout.write(r["signingCertificate"])
        if a.location:
            print("location: %s" % a.location)
    elif a.certs_cmd == "verify-file":
        # exit 1 when the check says no (as `evsectl verify`); bad input
        # raises on to evsectl: one line, exit 2
        try:
            verify_file(a.cert, a.root, a.signature, a.file)
        except Rejected as e:
            sys.stderr.write("evsectl certs verify-file: REJECTED: %s\n" % e)
            return 1
        print("ok: %s signed by %s, issued by %s" % (a.file, a.cert, a.root))
    return 0


if __name__ == "__main__":
    a = build_parser().parse_args()
    sys.exit(main(a))
