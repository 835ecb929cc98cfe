"""Certificate management and security events of the OCPP 1.6 security
whitepaper (edition 3) on a virtual board against the `ocpp` CSMS over
wss:// (tests/prep/csms.py with TLS; every payload schema-checked): one
board for the whole flow. The certificateHashData the board reports is
compared with cryptography's OCSP CertID computed here from the same PEM
(tests/prep/ocpp_sec_certs.py). The CSMS then moves to other TLS
certificates and refuses the credentials once, for the security events of
the link. Test names follow the OCPP 1.6 security
conformance cases (TC_073_CS install, TC_074_CS list, TC_076_CS delete)."""
import datetime
import ipaddress
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.v16 import call

from tests.prep import ocpp_sec_certs
from tests.prep.csms import CSMS
from tools import certs
from tools.vboard import VBoard

MF = "ManufacturerRootCertificate"
CS = "CentralSystemRootCertificate"


def _root(cn):
    k = ec.generate_private_key(ec.SECP256R1())
    return k, certs.build_cert(certs.name(cn, "EVSE Test"), k, ca=True, days=30)


def _pem(c):
    return c.public_bytes(serialization.Encoding.PEM).decode()


def _server_ctx(d, tag, root, root_key):
    # a CSMS TLS certificate for 127.0.0.1 issued by `root`
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csms " + tag)]))
            .issuer_name(root.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    cp, kp = d / (tag + ".pem"), d / (tag + ".key")
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cp), str(kp))
    return ctx


def _snake(h):
    return {"hash_algorithm": h["hashAlgorithm"], "issuer_name_hash": h["issuerNameHash"],
            "issuer_key_hash": h["issuerKeyHash"], "serial_number": h["serialNumber"]}


def test_TC_073_074_076_certificates_trust_anchors_and_security_events(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    roots = ocpp_sec_certs.roots(str(pki), datetime.datetime.now(datetime.timezone.utc))
    want = {n: _snake(ocpp_sec_certs.hash_data(c)) for n, c in roots.items()}
    k0, ca0 = _root("Installer CA")            # ocpp.ca, on the flash from the installer
    k1, ca1 = _root("CSMS Root 1")             # installed over OCPP, then the CSMS moves to it
    k2, ca2 = _root("CSMS Root unknown")       # never installed
    want["ca1"] = _snake(ocpp_sec_certs.hash_data(ca1))
    cs = CSMS(interval=300, ssl=_server_ctx(pki, "s0", ca0, k0)).start()
    b = VBoard(str(tmp_path / "cpc"), id="cpc", ocpp=cs.url, wdt_ms=3000,
               config={"mqtt": {"host": ""}, "ocpp": {"ca": "/trust/csms.pem"}},
               files={"trust/csms.pem": _pem(ca0).encode()}).start()

    def install(kind, name):
        pem = _pem(ca1) if name == "ca1" else (pki / (name + ".pem")).read_text()
        return cs.call("cpc", call.InstallCertificate(certificate_type=kind, certificate=pem)).status

    def ids(kind):
        r = cs.call("cpc", call.GetInstalledCertificateIds(certificate_type=kind))
        return r.status, r.certificate_hash_data

    def events(kind=None):
        return [e for e in cs.calls("SecurityEventNotification", "cpc") if kind is None or e["type"] == kind]

    try:
        cs.wait(lambda: cs.calls("StatusNotification", "cpc"), 30, "the board registered over wss://")
        ev = cs.wait(lambda: events("StartupOfTheDevice"), 20)[0]
        assert ev["timestamp"]
        assert ids(MF) == ("NotFound", None) and ids(CS) == ("NotFound", None)

        # TC_073: install a Manufacturer root and a Central System root
        assert install(MF, "mf") == "Accepted"
        assert install(MF, "mf") == "Accepted"          # the same one again: stored once
        assert install(CS, "ca1") == "Accepted"
        # TC_074: the hashes as computed here from the same PEM
        assert ids(MF) == ("Accepted", [want["mf"]])
        assert ids(CS) == ("Accepted", [want["ca1"]])
        assert want["mf"]["serial_number"] == "FFF"
        rec = cs.wait(lambda: len(events("ReconfigurationOfSecurityParameters")) >= 2 and
                      events("ReconfigurationOfSecurityParameters"))
        assert len(rec) == 2, rec

        # invalid certificates: Rejected, nothing stored
        for kind, name in ((MF, "notca"), (MF, "forged"), (MF, "expired"), (CS, "cs_ed")):
            assert install(kind, name) == "Rejected", name
        assert cs.call("cpc", call.InstallCertificate(certificate_type=MF, certificate="garbage")).status \
            == "Rejected"
        # bad payloads: CALLERROR, nothing changes
        r = cs.raw("cpc", [2, "bad-1", "InstallCertificate", {"certificateType": MF, "certificate": 5}])
        assert r[0] == 4 and r[2] == "TypeConstraintViolation", r
        r = cs.raw("cpc", [2, "bad-2", "DeleteCertificate", {"certificateHashData": {"hashAlgorithm": "SHA256"},
                                                             "x": 1}])
        assert r[0] == 4 and r[2] == "FormatViolation", r
        r = cs.raw("cpc", [2, "bad-3", "hash_data", {}])      # a helper of sec.py is no action
        assert r[:3] == [4, "bad-3", "NotImplemented"], r
        assert ids(MF) == ("Accepted", [want["mf"]]) and ids(CS) == ("Accepted", [want["ca1"]])

        # the last Central System root of a wss:// link is not deleted (M04.FR.06)
        assert cs.call("cpc", call.DeleteCertificate(certificate_hash_data=want["ca1"])).status == "Failed"
        # store full (4 of a kind): Rejected (M05.FR.03)
        for n in ("cs2", "cs3", "cs4"):
            assert install(CS, n) == "Accepted", n
        assert install(CS, "cs5") == "Rejected"
        # TC_076: delete one, list again
        assert cs.call("cpc", call.DeleteCertificate(certificate_hash_data=want["cs3"])).status == "Accepted"
        assert cs.call("cpc", call.DeleteCertificate(certificate_hash_data=want["cs3"])).status == "NotFound"
        assert ids(CS) == ("Accepted", [want["ca1"], want["cs2"], want["cs4"]])
        cs.wait(lambda: len(events("ReconfigurationOfSecurityParameters")) >= 6, 20,
                "an event per install and delete")

        keys = {k["key"]: k for k in cs.call("cpc", call.GetConfiguration(
            key=["SecurityProfile", "CertificateStoreMaxLength"])).configuration_key}
        assert keys["SecurityProfile"]["value"] == "0" and keys["SecurityProfile"]["readonly"] is True
        assert keys["CertificateStoreMaxLength"]["value"] == "8"

        # the CSMS moves to a certificate no anchor verifies: InvalidCentralSystemCertificate,
        # queued while offline; then to one by the root installed over OCPP (not ocpp.ca):
        # the board trusts it from the next connection and delivers the queued event
        mark = b.mark()
        cs.stop()
        cs.ssl = _server_ctx(pki, "s2", ca2, k2)
        cs.start()
        b.wait_output("ocpp: security event InvalidCentralSystemCertificate", 30, since=mark)
        cs.stop()
        cs.ssl = _server_ctx(pki, "s1", ca1, k1)
        n_conn = len(cs.connects)
        cs.start()
        ev = cs.wait(lambda: events("InvalidCentralSystemCertificate"), 40, "the queued TLS event")
        assert len(ev) == 1 and "TLS" in ev[0]["techInfo"], ev
        assert len(cs.connects) > n_conn
        # the CSMS refuses the board's credentials (401): FailedToAuthenticateAtCentralSystem,
        # delivered once the CSMS lets it in again
        cs.refuse = 401
        cs.stop()
        cs.start()
        cs.wait(lambda: cs.refused, 30, "a refused upgrade")
        cs.refuse = None
        ev = cs.wait(lambda: events("FailedToAuthenticateAtCentralSystem"), 40, "the 401 event")
        assert len(ev) == 1 and "401" in ev[0]["techInfo"], ev

        # an OCPP Reset: ResetOrReboot after the reboot; the store survives it
        n_rr = len(events("ResetOrReboot"))
        boots = b.boots
        assert cs.call("cpc", call.Reset(type="Soft")).status == "Accepted"
        b.wait_boots(boots + 1, 60)
        ev = cs.wait(lambda: events("ResetOrReboot")[n_rr:], 40, "ResetOrReboot")[0]
        assert ev["techInfo"] == "SoftReset"
        assert ids(CS) == ("Accepted", [want["ca1"], want["cs2"], want["cs4"]])
    finally:
        b.stop()
        cs.stop()
    assert cs.errors == [], cs.errors
