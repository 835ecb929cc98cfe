# mptest: heapsize=112K prep=tests.prep.x509_certs:make
# X.509 reader and chain check (firmware/ota/x509.py) on certificates made by
# `cryptography` (tests/prep/x509_certs.py): fields as cryptography reads them,
# valid chains, each rejection rule, garbage and truncated DER, PEM, and the
# OCPP firmware signature checked with the signing certificate's key.
import binascii
import gc
import hashlib
import json
import mptest
from firmware.ota import x509
from firmware.ota.x509 import CertError



def der(name):
    with open(mptest.data_path(name + ".der"), "rb") as f:
        return f.read()


def fields():
    # not kept: the whole table is a large part of a 96K heap
    gc.collect()
    with open(mptest.data_path("fields.json")) as f:
        return json.load(f)


def sha256_file(name):
    h = hashlib.sha256()
    buf = bytearray(256)
    with open(mptest.data_path(name), "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return h.digest()


def test_fields_match_cryptography():
    n = 0
    for name, want in sorted(fields().items()):
        c = x509.parse(der(name))
        mptest.eq(c.subject, bytes.fromhex(want["subject"]), name, "subject")
        mptest.eq(c.issuer, bytes.fromhex(want["issuer"]), name, "issuer")
        mptest.eq(c.not_before, want["not_before"], name, "not_before")
        mptest.eq(c.not_after, want["not_after"], name, "not_after")
        mptest.eq(c.is_ca, want["is_ca"], name, "is_ca")
        mptest.eq(c.path_len, want["path_len"], name, "path_len")
        mptest.eq(c.key_usage, want["key_usage"], name, "key_usage")
        mptest.eq(c.key_type, want["key_type"], name, "key_type")
        mptest.eq(c.public_key, bytes.fromhex(want["public_key"]), name, "public_key")
        mptest.eq(hashlib.sha256(c.tbs).digest(), bytes.fromhex(want["tbs_sha256"]), name, "tbs")
        mptest.eq(c.signature, bytes.fromhex(want["signature"]), name, "signature")
        n += 1
    mptest.true(n >= 25, n)


def test_known_fields_of_the_root():
    c = x509.parse(der("root"))
    mptest.eq(x509.common_name(c.subject), "Root CA")
    mptest.eq(c.subject, c.issuer)
    mptest.eq(c.not_before, 1735689600)      # 2025-01-01T00:00:00Z (UTCTime)
    mptest.eq(c.not_after, 2840140800)       # 2060-01-01T00:00:00Z (GeneralizedTime)
    mptest.eq(c.key_usage, x509.KU_KEY_CERT_SIGN | 0x40)
    mptest.eq(c.sig_alg, "p256")
    mptest.eq(x509.parse(der("leaf_ed")).key_type, "ed25519")
    mptest.eq(len(x509.parse(der("leaf_ed")).public_key), 32)
    mptest.eq(x509.parse(der("leaf_by_ed_root")).sig_alg, "ed25519")


def test_every_chain_case():
    gc.collect()
    with open(mptest.data_path("chains.json")) as f:
        cases = json.load(f)
    n_ok = n_err = 0
    for name in sorted(cases):
        c = cases[name]
        roots = [der(r) for r in c["roots"]]
        inter = [der(i) for i in c["inter"]]
        if "ok" in c:
            leaf = x509.check_chain(der(c["leaf"]), roots, c["now"], inter)
            mptest.eq(leaf.public_key, x509.parse(der(c["ok"])).public_key, name)
            n_ok += 1
        else:
            e = mptest.raises(CertError, x509.check_chain, der(c["leaf"]), roots, c["now"], inter)
            mptest.true(c["error"] in str(e), name, "error was:", str(e), "want:", c["error"])
            n_err += 1
    mptest.true(n_ok >= 9 and n_err >= 14, n_ok, n_err)


def test_validity_edges():
    f = fields()["leaf_ok"]
    gc.collect()
    leaf, roots = der("leaf_ok"), [der("root")]
    x509.check_chain(leaf, roots, f["not_before"])
    x509.check_chain(leaf, roots, f["not_after"])
    mptest.raises(CertError, x509.check_chain, leaf, roots, f["not_before"] - 1)
    mptest.raises(CertError, x509.check_chain, leaf, roots, f["not_after"] + 1)


def test_garbage_and_truncated_der():
    leaf = der("leaf_ok")
    for n in (0, 1, 2, 3, 4, 10, 50, 100, len(leaf) // 2, len(leaf) - 70, len(leaf) - 1):
        mptest.raises(CertError, x509.parse, leaf[:n])
    mptest.raises(CertError, x509.parse, leaf + b"\x00")
    for bad in (None, 5, "MIIB", [0x30], b"\x30\x80" + leaf[2:], b"\x30\x00", b"\xff" * 40,
                b"\x30\x84\xff\xff\xff\xff", b"\x31" + leaf[1:]):
        mptest.raises(CertError, x509.parse, bad)
    # every single-byte change of the header bytes is either refused or changes a field
    for i in (0, 1, 4, 5, 8, 9):
        b = bytearray(leaf)
        b[i] ^= 0x01
        try:
            x509.parse(bytes(b))
        except CertError:
            pass
    # a deterministic sweep of byte flips: parse either raises CertError or
    # returns a certificate, never anything else; the chain never accepts it
    s = 12345
    for _ in range(60):
        s = (s * 1103515245 + 12345) & 0x7FFFFFFF
        b = bytearray(leaf)
        i = s % len(b)
        b[i] ^= 1 << (s >> 16 & 7)
        try:
            x509.check_chain(bytes(b), [der("root")], 1780272000)
            raise AssertionError("flipped byte %d accepted" % i)
        except CertError:
            pass


def test_long_form_lengths_must_be_minimal():
    # SEQUENCE of 5 bytes written with a long-form length
    mptest.raises(CertError, x509._tlv, b"\x30\x81\x05" + bytes(5), 0, 8)
    mptest.raises(CertError, x509._tlv, b"\x30\x82\x00\x85" + bytes(0x85), 0, 4 + 0x85)
    mptest.eq(x509._tlv(b"\x30\x81\x85" + bytes(0x85), 0, 3 + 0x85), (0x30, 3, 3 + 0x85))
    mptest.raises(CertError, x509._tlv, b"\x30\x80" + bytes(4), 0, 6)   # indefinite
    mptest.raises(CertError, x509._tlv, b"\x3f\x01\x00", 0, 3)          # multi-byte tag


def test_pem_to_der():
    gc.collect()
    leaf = der("leaf_ok")
    with open(mptest.data_path("leaf_ok.pem")) as f:
        text = f.read()
    mptest.eq(x509.pem_to_der(text), leaf)
    mptest.eq(x509.pem_to_der(text.encode()), leaf)
    with open(mptest.data_path("bundle.pem"), "rb") as f:
        mptest.eq(x509.pem_to_der(f.read()), leaf, "first block of a bundle, CRLF")
    for bad in ("", "no pem here", None, 5, b"\xff\xfe"):
        mptest.raises(CertError, x509.pem_to_der, bad)
    # one mangled copy at a time (a 96K heap is fragmented by now)
    for i in range(4):
        gc.collect()
        if i == 0:
            bad = text.replace("-----END CERTIFICATE-----", "")
        elif i == 1:
            bad = text.replace("CERTIFICATE", "PRIVATE KEY")
        elif i == 2:
            bad = text[:60] + "!" + text[61:]
        else:
            bad = text[:70] + text[72:]    # base64 of a wrong length
        mptest.raises(CertError, x509.pem_to_der, bad)
        bad = None


def test_ocpp_firmware_signature_with_the_certificate_key():
    digest = sha256_file("fw.bin")
    leaf = x509.check_chain(der("leaf_ok"), [der("root")], 1780272000)
    with open(mptest.data_path("fw.sig")) as f:
        sig = binascii.a2b_base64(f.read())
    mptest.true(x509.verify_digest(leaf, digest, sig) is True)
    mptest.true(x509.verify_digest(leaf, hashlib.sha256(digest).digest(), sig) is False)
    mptest.true(x509.verify_digest(leaf, digest, sig[:-1]) is False)
    mptest.true(x509.verify_digest(leaf, digest[:31], sig) is False)
    # another certificate's key does not verify it
    mptest.true(x509.verify_digest(x509.parse(der("leaf_expired")), digest, sig) is False)
    # an Ed25519 signing certificate: Ed25519 over the digest
    led = x509.parse(der("leaf_ed"))
    with open(mptest.data_path("fw_ed.sig")) as f:
        sig_ed = binascii.a2b_base64(f.read())
    mptest.true(x509.verify_digest(led, digest, sig_ed) is True)
    mptest.true(x509.verify_digest(led, digest, sig) is False)
    mptest.true(x509.verify_digest(leaf, digest, sig_ed) is False)
    for bad in (None, 5, "cert"):
        mptest.true(x509.verify_digest(bad, digest, sig) is False)
    # out of heap is no verdict: MemoryError, never False ("bad signature")
    import micropython
    for c, s in ((leaf, sig), (led, sig_ed)):
        got = [None]
        micropython.heap_lock()
        try:
            got[0] = x509.verify_digest(c, digest, s)
        except MemoryError:
            got[0] = MemoryError
        finally:
            micropython.heap_unlock()
        mptest.true(got[0] is MemoryError, "verify_digest with no heap returned", got[0])
        mptest.true(x509.verify_digest(c, digest, s) is True, "valid again with heap")


def test_bad_arguments():
    mptest.raises(CertError, x509.check_chain, der("leaf_ok"), der("root"))
    mptest.raises(CertError, x509.check_chain, der("leaf_ok"), [b"junk"])
    # a broken root beside a good one is skipped
    x509.check_chain(der("leaf_ok"), [b"junk", der("root")])
    mptest.raises(CertError, x509.check_chain, der("leaf_ok"), [der("root")], None, [b"junk"])
