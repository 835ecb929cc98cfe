# Certificate management of the OCPP 1.6 security whitepaper (edition 3):
# InstallCertificate (M05), GetInstalledCertificateIds (M03) and
# DeleteCertificate (M04) for the ManufacturerRootCertificate and
# CentralSystemRootCertificate kinds, over the CRC-checked store of
# certstore.py (<link dir>/certs). One function per action, f(link, payload)
# -> answer payload, as in handlers.py; link.py imports this module only while
# it answers one of these CALLs (ACTIONS: any action not in link.ACTIONS comes
# here) and drops it after; the X.509 modules loaded for a call are dropped
# again when it is answered.
#
# Rules (docs/ocpp.md "Certificates and security events"):
# - a root is installed only when it is a CA (basicConstraints cA and keyUsage
#   with keyCertSign), self-signed with a signature that verifies, inside its
#   validity period at the link's wall clock (an unset clock: refused, fail
#   closed), and, for CentralSystemRootCertificate, a P-256 key (the only kind
#   TLS here can use). Anything else: Rejected, nothing written (M05.FR.06).
# - the store is full (4 of a kind): Rejected (M05.FR.03, CertificateStoreMaxLength);
#   a flash error: Failed (M05.FR.04). The same certificate twice: Accepted, stored once.
# - certificateHashData per edition 3 / RFC 6960 CertID: SHA-256 over the DER
#   issuer Name, SHA-256 over the issuer's subjectPublicKey value (a root is
#   its own issuer), the serial as hex without leading zeroes. Compared
#   case-insensitively (CiString).
# - the last CentralSystemRootCertificate in the store is not deleted while
#   the link is wss:// (M04.FR.06, Failed): the TLS stack here does not say
#   which anchor verified the CSMS, and the installer's ocpp.ca may no longer
#   be the CSMS's root. With two or more, any one may go (rotation: install
#   the new root, reconnect, delete the old one).
import sys
import hashlib
import binascii
from firmware.ocpp import rpc, certstore

CS = "CentralSystemRootCertificate"
MF = "ManufacturerRootCertificate"
KINDS = (CS, MF)
ACTIONS = ("InstallCertificate", "GetInstalledCertificateIds", "DeleteCertificate")
_CLOCK_MIN = 1577836800      # 2020-01-01: a wall clock before this is not set


def unix_now(t):
    # the link's wall clock in seconds since 1970 (x509's times), also on a 2000-epoch port
    import time
    return int(t) + (946684800 if time.gmtime(0)[0] == 2000 else 0)


def _hex(b):
    return binascii.hexlify(b).decode()


def serial_hex(serial):
    """The DER INTEGER content of a serial number -> hex without leading
    zeroes, upper case as in the whitepaper's example (4095 -> 'FFF')."""
    return _hex(serial).lstrip("0").upper() or "0"


def hash_data(cert):
    """CertificateHashDataType (SHA256) of a parsed self-signed root."""
    return {"hashAlgorithm": "SHA256",
            "issuerNameHash": _hex(hashlib.sha256(cert.issuer).digest()),
            "issuerKeyHash": _hex(hashlib.sha256(cert.public_key).digest()),
            "serialNumber": serial_hex(cert.serial)}


def same(a, b):
    """Do two CertificateHashData name the same certificate? (CiStrings; the
    serial without leading zeroes)"""
    for k in ("hashAlgorithm", "issuerNameHash", "issuerKeyHash"):
        if a[k].lower() != b[k].lower():
            return False
    return a["serialNumber"].lower().lstrip("0") == b["serialNumber"].lower().lstrip("0")


def _release(before):
    # drop the X.509 / signature modules this call loaded (not those an update job holds)
    for name in list(sys.modules):
        if name.startswith("firmware.ota.") and name not in before:
            sys.modules.pop(name, None)
            pkg = sys.modules.get("firmware.ota")
            attr = name[13:]
            if pkg is not None and attr in pkg.__dict__:
                delattr(pkg, attr)


def _check_root(x509, c, kind, now):
    # None when c may be installed as `kind`, else why not
    if not c.is_ca:
        return "not a CA certificate (basicConstraints cA)"
    if c.key_usage is None or not c.key_usage & x509.KU_KEY_CERT_SIGN:
        return "keyUsage lacks keyCertSign"
    if kind == CS and c.key_type != "p256":
        return "a CentralSystemRootCertificate must have a P-256 key (TLS)"
    if now < _CLOCK_MIN:
        return "the wall clock is not set: validity cannot be checked"
    if now < c.not_before:
        return "not yet valid"
    if now > c.not_after:
        return "expired"
    if not x509.signed_by(c, c):
        return "not self-signed or bad signature"
    return None


def InstallCertificate(lk, p):
    rpc.only(p, ("certificateType", "certificate"))
    kind = rpc.get(p, "certificateType", str, choices=KINDS)
    pem = rpc.get(p, "certificate", str, hi=5500)
    before = set(sys.modules)
    why = None
    try:
        from firmware.ota import x509
        try:
            der = x509.pem_to_der(pem)
            why = _check_root(x509, x509.parse(der), kind, unix_now(lk._now_s()))
        except x509.CertError as e:
            why = str(e)
        x509 = None
    except MemoryError:
        # no verdict: the certificate may be fine (CertificateStatus Failed)
        print("ocpp: InstallCertificate: out of memory")
        return {"status": "Failed"}
    finally:
        _release(before)
    if why is not None:
        print("ocpp: InstallCertificate %s rejected: %s" % (kind, why))
        return {"status": "Rejected"}
    d = lk._dir
    if der in certstore.load(d, kind):
        return {"status": "Accepted"}       # installed already: stored once
    try:
        name = certstore.add(d, kind, der)
    except ValueError as e:                 # the kind is full (or the DER too large)
        print("ocpp: InstallCertificate %s rejected: %s" % (kind, e))
        return {"status": "Rejected"}
    except OSError as e:
        print("ocpp: InstallCertificate %s failed: %r" % (kind, e))
        return {"status": "Failed"}
    lk.security_event("ReconfigurationOfSecurityParameters", "%s installed as %s" % (kind, name))
    return {"status": "Accepted"}


def _hashes(d, kind):
    # [(name, hash data)] of the stored certificates of kind that parse
    before = set(sys.modules)
    out = []
    try:
        from firmware.ota import x509
        for name, der in certstore.entries(d, kind):
            try:
                out.append((name, hash_data(x509.parse(der))))
            except x509.CertError:
                pass            # CRC-good but unusable: not trusted, not listed
        x509 = None
    finally:
        _release(before)
    return out


def GetInstalledCertificateIds(lk, p):
    rpc.only(p, ("certificateType",))
    kind = rpc.get(p, "certificateType", str, choices=KINDS)
    hd = [h for _, h in _hashes(lk._dir, kind)]
    if not hd:
        return {"status": "NotFound"}
    return {"status": "Accepted", "certificateHashData": hd}


def DeleteCertificate(lk, p):
    rpc.only(p, ("certificateHashData",))
    h = rpc.get(p, "certificateHashData", dict)
    rpc.only(h, ("hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber"))
    rpc.get(h, "hashAlgorithm", str, choices=("SHA256", "SHA384", "SHA512"))
    rpc.get(h, "issuerNameHash", str, hi=128)
    rpc.get(h, "issuerKeyHash", str, hi=128)
    rpc.get(h, "serialNumber", str, hi=40)
    d = lk._dir
    found = []
    for kind in KINDS:
        hs = _hashes(d, kind)
        for name, hd in hs:
            if same(hd, h):
                if kind == CS and len(hs) == 1 and lk.url.startswith("wss://"):
                    print("ocpp: DeleteCertificate: %s is the last CentralSystemRootCertificate"
                          " of a wss:// link" % name)
                    return {"status": "Failed"}
                found.append(name)
    if not found:
        return {"status": "NotFound"}   # also any hashAlgorithm but SHA256 (M04.FR.07)
    for name in found:
        try:
            ok = certstore.remove(d, name)
        except OSError:
            ok = False
        if not ok:
            return {"status": "Failed"}
    lk.security_event("ReconfigurationOfSecurityParameters", "%s deleted" % ",".join(found))
    return {"status": "Accepted"}
