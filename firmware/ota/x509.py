# A small X.509 (RFC 5280) certificate reader and chain check for MicroPython:
# the firmware signing certificate of OCPP's SignedUpdateFirmware against the
# Manufacturer roots installed on the charger. See docs/image-format.md.
#
#   der = pem_to_der(text)                      first CERTIFICATE block
#   cert = parse(der)                           strict DER, raises CertError
#   leaf = check_chain(leaf_der, root_ders, now_s=None, intermediates=())
#   ok = verify_digest(cert, sha256_digest32, signature)
#
# Keys and signatures: ECDSA P-256 with SHA-256 (ecdsa-with-SHA256) and
# Ed25519; anything else (RSA, other curves) is refused with CertError.
# Names are compared byte for byte as DER (stricter than RFC 5280's string
# matching: fail closed). Nothing in here does I/O or reads a clock.
from micropython import const

KU_DIGITAL_SIGNATURE = const(0x01)   # key_usage bit 0
KU_KEY_CERT_SIGN = const(0x20)       # key_usage bit 5
_MAX_DEPTH = const(4)                # intermediates + 1

_OID_ECDSA_SHA256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"
_OID_ED25519 = b"\x06\x03\x2b\x65\x70"
_OID_EC_PUBKEY = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"
_OID_P256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
_OID_CN = b"\x55\x04\x03"
# extensions (2.5.29.x): the ones used, then the ones known and ignored
_EXT_BASIC = b"\x55\x1d\x13"
_EXT_KU = b"\x55\x1d\x0f"
_EXT_KNOWN = (b"\x55\x1d\x0e", b"\x55\x1d\x23", b"\x55\x1d\x25", b"\x55\x1d\x11")


class CertError(Exception):
    pass


def _tlv(b, i, end):
    """(tag, content start, content end) of the DER element at b[i:end]."""
    if end - i < 2:
        raise CertError("truncated DER at %d" % i)
    tag = b[i]
    if tag & 0x1F == 0x1F:
        raise CertError("multi-byte DER tag at %d" % i)
    n = b[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if k < 1 or k > 3 or end - i < k:
            raise CertError("bad DER length at %d" % (i - 2))
        n = int.from_bytes(b[i:i + k], "big")
        if n < 0x80 or n >> (8 * (k - 1)) == 0:
            raise CertError("non-minimal DER length at %d" % (i - 2))
        i += k
    if n > end - i:
        raise CertError("DER element at %d runs past its end" % i)
    return tag, i, i + n


def _expect(b, i, end, tag, what):
    t, s, e = _tlv(b, i, end)
    if t != tag:
        raise CertError("%s: tag 0x%02x, expected 0x%02x" % (what, t, tag))
    return s, e


def _days(y, m, d):
    # days from 1970-01-01 to y-m-d (proleptic Gregorian)
    if m <= 2:
        y -= 1
        m += 12
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _num(v, i, n):
    x = 0
    for k in range(i, i + n):
        c = v[k] - 0x30
        if c < 0 or c > 9:
            raise CertError("validity time is not YYMMDDHHMMSSZ")
        x = x * 10 + c
    return x


def _time(b, i, end):
    t, s, e = _tlv(b, i, end)
    v = bytes(b[s:e])
    if t == 0x17 and len(v) == 13:          # UTCTime YYMMDDHHMMSSZ
        y = _num(v, 0, 2)
        y += 1900 if y >= 50 else 2000
        v = v[2:]
    elif t == 0x18 and len(v) == 15:        # GeneralizedTime YYYYMMDDHHMMSSZ
        y = _num(v, 0, 4)
        v = v[4:]
    else:
        raise CertError("bad validity time (tag 0x%02x, %d bytes)" % (t, len(v)))
    if v[10] != 0x5A:
        raise CertError("validity time is not in UTC (Z)")
    mo, d, h, mi, se = _num(v, 0, 2), _num(v, 2, 2), _num(v, 4, 2), _num(v, 6, 2), _num(v, 8, 2)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and se < 60):
        raise CertError("validity time out of range")
    return _days(y, mo, d) * 86400 + h * 3600 + mi * 60 + se, e


class Cert:
    """One parsed certificate. subject, issuer: the DER Name (whole element);
    not_before, not_after: seconds since 1970 UTC; is_ca, path_len (None when
    unlimited or absent), key_usage (bits, KU_*, or None when absent);
    key_type 'p256' | 'ed25519', public_key 65 | 32 bytes (the subjectPublicKey
    BIT STRING's value); serial: the serialNumber INTEGER's content bytes; tbs: the DER
    TBSCertificate (what the issuer signed); sig_alg 'p256' | 'ed25519',
    signature: DER ECDSA-Sig-Value or 64 raw bytes."""

    def __init__(self):
        self.is_ca = False
        self.path_len = None
        self.key_usage = None


def _alg(b, s, e, what):
    # AlgorithmIdentifier of a signature: ecdsa-with-SHA256 or Ed25519, no parameters
    v = bytes(b[s:e])
    if v == _OID_ECDSA_SHA256:
        return "p256"
    if v == _OID_ED25519:
        return "ed25519"
    raise CertError("%s: unsupported signature algorithm" % what)


def _spki(c, b, s, e):
    s1, e1 = _expect(b, s, e, 0x30, "SPKI algorithm")
    s2, e2 = _expect(b, e1, e, 0x03, "SPKI key")
    if e2 != e:
        raise CertError("trailing bytes in the SPKI")
    alg = bytes(b[s1:e1])
    key = bytes(b[s2:e2])
    if alg == _OID_EC_PUBKEY + _OID_P256:
        if len(key) != 66 or key[0] != 0 or key[1] != 4:
            raise CertError("P-256 key is not an uncompressed point")
        from . import ecdsa_p256
        if ecdsa_p256.public_point(key[1:]) is None:
            raise CertError("P-256 key is not on the curve")
        c.key_type = "p256"
    elif alg == _OID_ED25519:
        if len(key) != 33 or key[0] != 0:
            raise CertError("Ed25519 key is not 32 bytes")
        c.key_type = "ed25519"
    else:
        raise CertError("unsupported public key type (P-256 and Ed25519 only)")
    c.public_key = key[1:]


def _bool(b, s, e):
    if e - s != 1 or b[s] not in (0, 0xFF):
        raise CertError("bad DER BOOLEAN")
    return b[s] == 0xFF


def _extensions(c, b, s, e):
    s, e2 = _expect(b, s, e, 0x30, "extensions")
    if e2 != e:
        raise CertError("trailing bytes after the extensions")
    seen = []
    i = s
    while i < e:
        _, xs, xe = _tlv(b, i, e)
        i = xe
        os_, oe = _expect(b, xs, xe, 0x06, "extension id")
        oid = bytes(b[os_:oe])
        if oid in seen:
            raise CertError("duplicate extension")
        seen.append(oid)
        critical = False
        t, vs, ve = _tlv(b, oe, xe)
        if t == 0x01:
            critical = _bool(b, vs, ve)
            if not critical:
                raise CertError("critical=FALSE encoded (not DER)")
            t, vs, ve = _tlv(b, ve, xe)
        if t != 0x04 or ve != xe:
            raise CertError("bad extension value")
        if oid == _EXT_BASIC:
            ss, se = _expect(b, vs, ve, 0x30, "basicConstraints")
            if se != ve:
                raise CertError("trailing bytes in basicConstraints")
            if ss < se and b[ss] == 0x01:
                _, bs, be = _tlv(b, ss, se)
                c.is_ca = _bool(b, bs, be)
                if not c.is_ca:
                    raise CertError("cA=FALSE encoded (not DER)")
                ss = be
            if ss < se:
                ps, pe = _expect(b, ss, se, 0x02, "pathLenConstraint")
                if pe != se or pe - ps < 1 or pe - ps > 2 or b[ps] & 0x80 or (
                        pe - ps == 2 and b[ps] == 0 and not b[ps + 1] & 0x80):
                    raise CertError("bad pathLenConstraint")
                if not c.is_ca:
                    raise CertError("pathLenConstraint without cA")
                c.path_len = int.from_bytes(b[ps:pe], "big")
        elif oid == _EXT_KU:
            ks, ke = _expect(b, vs, ve, 0x03, "keyUsage")
            if ke != ve or ke - ks < 2 or ke - ks > 3 or b[ks] > 7:
                raise CertError("bad keyUsage")
            bits = 0
            for j in range(ke - ks - 1):
                v = b[ks + 1 + j]
                for k in range(8):
                    if v & (0x80 >> k):
                        bits |= 1 << (8 * j + k)
            c.key_usage = bits
        elif critical and oid not in _EXT_KNOWN:
            raise CertError("unsupported critical extension")


def parse(der):
    """A Cert from DER bytes; raises CertError on anything malformed or
    unsupported (the whole input must be one Certificate)."""
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise CertError("certificate must be DER bytes")
    b = bytes(der)
    try:
        return _parse(b)
    except (CertError, MemoryError):
        raise
    except Exception as e:   # IndexError, ValueError from a hostile encoding
        raise CertError("malformed certificate (%s)" % type(e).__name__)


def _parse(b):
    end = len(b)
    s, e = _expect(b, 0, end, 0x30, "Certificate")
    if e != end:
        raise CertError("trailing bytes after the certificate")
    c = Cert()
    t, ts, te = _tlv(b, s, e)
    if t != 0x30:
        raise CertError("TBSCertificate is not a SEQUENCE")
    c.tbs = b[s:te]
    a_s, a_e = _expect(b, te, e, 0x30, "signatureAlgorithm")
    c.sig_alg = _alg(b, a_s, a_e, "signatureAlgorithm")
    g_s, g_e = _expect(b, a_e, e, 0x03, "signatureValue")
    if g_e != e:
        raise CertError("trailing bytes after the signature")
    if g_e - g_s < 2 or b[g_s] != 0:
        raise CertError("signature BIT STRING with unused bits")
    c.signature = b[g_s + 1:g_e]
    # TBSCertificate
    i = ts
    t, vs, ve = _tlv(b, i, te)
    if t != 0xA0:
        raise CertError("not an X.509 v3 certificate")
    if b[vs:ve] != b"\x02\x01\x02":
        raise CertError("certificate version is not v3")
    ss, se = _expect(b, ve, te, 0x02, "serialNumber")
    if se - ss < 1 or se - ss > 20 or b[ss] & 0x80:
        raise CertError("bad serialNumber")
    c.serial = b[ss:se]
    as_, ae = _expect(b, se, te, 0x30, "signature")
    if b[as_:ae] != b[a_s:a_e]:
        raise CertError("TBS signature algorithm differs from the outer one")
    t, ns, ne = _tlv(b, ae, te)
    if t != 0x30:
        raise CertError("issuer is not a Name")
    c.issuer = b[ae:ne]
    vs, ve = _expect(b, ne, te, 0x30, "validity")
    c.not_before, i = _time(b, vs, ve)
    c.not_after, i = _time(b, i, ve)
    if i != ve:
        raise CertError("trailing bytes in the validity")
    t, us, ue = _tlv(b, ve, te)
    if t != 0x30:
        raise CertError("subject is not a Name")
    c.subject = b[ve:ue]
    ps, pe = _expect(b, ue, te, 0x30, "subjectPublicKeyInfo")
    _spki(c, b, ps, pe)
    i = pe
    while i < te:
        t, xs, xe = _tlv(b, i, te)
        if t in (0x81, 0x82):
            pass                      # issuer/subject unique ids: ignored
        elif t == 0xA3:
            _extensions(c, b, xs, xe)
            if xe != te:
                raise CertError("bytes after the extensions")
        else:
            raise CertError("unexpected TBS field (tag 0x%02x)" % t)
        i = xe
    return c


def common_name(name):
    """The first commonName of a DER Name as text, or None (for messages)."""
    try:
        s, e = _expect(name, 0, len(name), 0x30, "Name")
        while s < e:
            _, rs, re = _tlv(name, s, e)
            _, as_, ae = _tlv(name, rs, re)
            os_, oe = _expect(name, as_, ae, 0x06, "type")
            if bytes(name[os_:oe]) == _OID_CN:
                _, vs, ve = _tlv(name, oe, ae)
                return bytes(name[vs:ve]).decode()
            s = re
    except Exception:
        pass
    return None


def _sig_ok(issuer, cert):
    """Is cert signed by issuer's key?"""
    if issuer.key_type != cert.sig_alg:
        return False
    # out of heap raises MemoryError (check_chain turns it into a CertError
    # "out of memory"): never read as a bad signature
    import hashlib
    if cert.sig_alg == "p256":
        from . import ecdsa_p256
        rs = ecdsa_p256.parse_sig(cert.signature)
        q = ecdsa_p256.public_point(issuer.public_key)
        if rs is None or q is None:
            return False
        e = int.from_bytes(hashlib.sha256(cert.tbs).digest(), "big")
        return ecdsa_p256._verify(q, e, rs)
    from . import ed25519
    return ed25519.verify(issuer.public_key, cert.tbs, cert.signature)


def signed_by(cert, issuer):
    """Is cert issued by issuer: its issuer Name is issuer's subject (DER, byte
    for byte) and issuer's key verifies its signature? (A self-signed root:
    signed_by(c, c).) MemoryError propagates (no verdict)."""
    return cert.issuer == issuer.subject and _sig_ok(issuer, cert)


def _name(c):
    return common_name(c.subject) or "?"


def _valid_at(c, now_s, what):
    if now_s is None:
        return
    if now_s < c.not_before:
        raise CertError("%s certificate %r not yet valid" % (what, _name(c)))
    if now_s > c.not_after:
        raise CertError("%s certificate %r expired" % (what, _name(c)))


def _can_issue(ca, below):
    """ca may sign certificates: cA, keyCertSign when keyUsage is present,
    pathLenConstraint >= the number of intermediates below it."""
    if not ca.is_ca:
        raise CertError("issuer %r is not a CA (basicConstraints cA)" % _name(ca))
    if ca.key_usage is not None and not ca.key_usage & KU_KEY_CERT_SIGN:
        raise CertError("issuer %r keyUsage lacks keyCertSign" % _name(ca))
    if ca.path_len is not None and below > ca.path_len:
        raise CertError("issuer %r pathLenConstraint %d exceeded" % (_name(ca), ca.path_len))


def _parse_all(ders, what):
    out = []
    for d in ders:
        try:
            out.append(parse(d))
        except CertError:
            if what == "intermediate":
                raise
            # an unusable installed root is skipped: it can only trust less
    return out


def check_chain(leaf_der, root_ders, now_s=None, intermediates=()):
    """Check that the signing certificate leaf_der chains, through optional
    intermediates, to one of the installed roots: names match, every
    signature verifies, every certificate is valid at now_s (when the wall
    clock is known; None skips validity), every issuer is a CA with
    keyCertSign (when keyUsage is present) and within its path length, and
    the leaf may sign (digitalSignature, when keyUsage is present). Returns
    the parsed leaf; raises CertError with the reason."""
    if isinstance(root_ders, (bytes, bytearray, str)) or isinstance(intermediates, (bytes, bytearray, str)):
        raise CertError("root_ders and intermediates must be lists of DER certificates")
    try:
        return _chain(leaf_der, root_ders, now_s, intermediates)
    except MemoryError:
        raise CertError("out of memory while checking the certificate chain")


def _chain(leaf_der, root_ders, now_s, intermediates):
    leaf = parse(leaf_der)
    if leaf.key_usage is not None and not leaf.key_usage & KU_DIGITAL_SIGNATURE:
        raise CertError("signing certificate keyUsage lacks digitalSignature")
    _valid_at(leaf, now_s, "signing")
    roots = _parse_all(root_ders, "root")
    if not roots:
        raise CertError("no usable root certificate installed")
    inter = _parse_all(intermediates, "intermediate")
    cur = leaf
    below = 0
    for _ in range(_MAX_DEPTH):
        named = False
        for r in roots:
            if r.subject == cur.issuer:
                named = True
                if _sig_ok(r, cur):
                    _can_issue(r, below)
                    _valid_at(r, now_s, "root")
                    return leaf
        nxt = None
        for c in inter:
            if c.subject == cur.issuer and c is not cur:
                named = True
                if _sig_ok(c, cur):
                    nxt = c
                    break
        if nxt is None:
            if named:
                raise CertError("bad signature on %r by its issuer" % _name(cur))
            raise CertError("issuer of %r is not an installed root" % _name(cur))
        _can_issue(nxt, below)
        _valid_at(nxt, now_s, "intermediate")
        below += 1
        cur = nxt
    raise CertError("certificate chain longer than %d" % _MAX_DEPTH)


def verify_digest(cert, digest, signature):
    """True when signature is a signature of the 32-byte SHA-256 digest by the
    certificate's key: ECDSA P-256 (DER ECDSA-Sig-Value, the digest taken as
    the hash) or Ed25519 (the digest as the message). Never raises on bad
    input; MemoryError (no verdict) propagates, as in ecdsa_p256/ed25519."""
    try:
        if cert.key_type == "p256":
            from . import ecdsa_p256
            return ecdsa_p256.verify_digest(cert.public_key, digest, signature)
        if cert.key_type == "ed25519":
            if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != 32:
                return False
            from . import ed25519
            return ed25519.verify(cert.public_key, digest, signature)
    except MemoryError:
        raise   # out of heap is not a bad signature
    except Exception:
        pass
    return False


def pem_to_der(text):
    """DER bytes of the first -----BEGIN CERTIFICATE----- block of text (str
    or bytes); raises CertError."""
    import binascii
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode()
        except Exception:
            raise CertError("PEM is not text")
    if not isinstance(text, str):
        raise CertError("PEM must be str or bytes")
    begin = "-----BEGIN CERTIFICATE-----"
    i = text.find(begin)
    if i < 0:
        raise CertError("no BEGIN CERTIFICATE in the PEM")
    i += len(begin)
    j = text.find("-----END CERTIFICATE-----", i)
    if j < 0:
        raise CertError("no END CERTIFICATE in the PEM")
    body = "".join(text[i:j].split())
    try:
        der = binascii.a2b_base64(body)
    except Exception:
        raise CertError("bad base64 in the PEM")
    if not der or binascii.b2a_base64(der).strip() != body.encode():
        raise CertError("bad base64 in the PEM")
    return der
