# The OCPP 1.6 security whitepaper's firmware signature (SignedUpdateFirmware,
# use case "Secure firmware update"): the signing certificate sent with the
# request must chain to an installed Manufacturer root, and the signature
# over the firmware file (base64 of ECDSA P-256 / SHA-256, DER; or Ed25519 of
# the file's SHA-256) must verify with that certificate's key once the file
# is downloaded. This is in addition to the image's own MCUboot signature
# (image.py): both must pass. Pure: no I/O, no clock (the caller gives
# now_s). Loaded only while a request or a downloaded file is checked (the
# link and ondemand.py drop it after).
#
#   key = check_request(pem, sig_b64, root_ders, now_s)   -> "p256:<hex>" | "ed25519:<hex>"
#   ok = verify(key, sha256_digest, sig_b64)             -> True / False
#
# Out of heap is no verdict: check_request raises SigError with kind "mem",
# verify lets MemoryError through (the callers retry or report it as such,
# never as a bad certificate or signature).
import binascii

MIN_TIME = 1577836800     # 2020-01-01: a wall clock before this is not set


class SigError(ValueError):
    """kind: "cert" (InvalidCertificate), "sig" (the signature field is not
    one of the key's type), "mem" (out of heap: no verdict)."""

    def __init__(self, kind, msg):
        super().__init__(msg)
        self.kind = kind
        self.msg = msg


def decode_sig(b64, key_type):
    """The raw signature of the base64 text: strict base64, a strict DER
    ECDSA-Sig-Value for p256, 64 bytes for ed25519; SigError("sig")."""
    if type(b64) is not str or not 0 < len(b64) <= 800:
        raise SigError("sig", "signature must be base64 text")
    body = "".join(b64.split())
    try:
        sig = binascii.a2b_base64(body)
    except Exception:
        raise SigError("sig", "signature is not base64")
    if not sig or binascii.b2a_base64(sig).strip() != body.encode():
        raise SigError("sig", "signature is not base64")
    if key_type == "p256":
        from firmware.ota import ecdsa_p256
        if ecdsa_p256.parse_sig(sig) is None:
            raise SigError("sig", "signature is not a DER ECDSA-Sig-Value")
    elif key_type == "ed25519":
        if len(sig) != 64:
            raise SigError("sig", "Ed25519 signature is not 64 bytes")
    else:
        raise SigError("sig", "unsupported key type %r" % (key_type,))
    return sig


def parse_key(key):
    """(key type, public key bytes) of a key string of check_request; SigError."""
    if type(key) is str:
        kt, _, h = key.partition(":")
        n = {"p256": 65, "ed25519": 32}.get(kt)
        if n is not None and len(h) == 2 * n:
            try:
                return kt, binascii.unhexlify(h)
            except Exception:
                pass
    raise SigError("sig", "bad signing key")


def check_request(cert_pem, sig_b64, root_ders, now_s):
    """Check SignedUpdateFirmware's signingCertificate (PEM) against the
    installed Manufacturer roots (DER list) at wall-clock time now_s, and the
    form of its signature. The certificate must chain to a root, be valid at
    now_s (and the clock must be set) and carry keyUsage digitalSignature.
    Returns the signing key as "type:hex" (what the update job keeps);
    raises SigError."""
    if not root_ders:
        raise SigError("cert", "no Manufacturer root certificate installed")
    if type(now_s) not in (int, float) or now_s < MIN_TIME:
        raise SigError("cert", "wall clock not set: the certificate's validity cannot be checked")
    from firmware.ota import x509
    try:
        der = x509.pem_to_der(cert_pem)
        leaf = x509.check_chain(der, root_ders, int(now_s))
    except x509.CertError as e:
        m = str(e)
        raise SigError("mem" if "out of memory" in m else "cert", m)
    except MemoryError:
        raise SigError("mem", "out of memory while checking the certificate")
    if leaf.key_usage is None:
        raise SigError("cert", "signing certificate has no keyUsage (digitalSignature required)")
    decode_sig(sig_b64, leaf.key_type)
    return "%s:%s" % (leaf.key_type, binascii.hexlify(leaf.public_key).decode())


def verify(key, digest, sig_b64):
    """True when sig_b64 is the whitepaper signature, by `key` (check_request's
    string), of the file whose SHA-256 is `digest`. False on any bad input;
    MemoryError (no verdict) propagates."""
    try:
        kt, pk = parse_key(key)
        sig = decode_sig(sig_b64, kt)
    except SigError:
        return False
    if type(digest) not in (bytes, bytearray) or len(digest) != 32:
        return False
    if kt == "p256":
        from firmware.ota import ecdsa_p256
        return ecdsa_p256.verify_digest(pk, digest, sig)
    from firmware.ota import ed25519
    return ed25519.verify(pk, digest, sig)
