"""The signed firmware update of the OCPP 1.6 security whitepaper (ed. 3,
use case "Secure firmware update"; OCPP 1.6 security conformance cases
TC_CP_V16_SEC_029..032 in spirit: signed update, invalid signature, invalid
certificate) on one virtual board against the `ocpp` CSMS: the board trusts a
Manufacturer root written by VBoard(ocpp_mfr_root=...) (`evsectl vboard
--ocpp-mfr-root`), the release engineer signs the release file with
`evsectl certs sign-file --cert` (tools/certs.release_signature), and the
board checks the certificate chain at the request, the signature over the
file after the download, then the image's own MCUboot signature, installs,
and reports SignedFirmwareStatusNotification with the requestId; a trial boot
that fails rolls back and the next BootNotification has the old version.
With ocpp.signed_updates_only the core UpdateFirmware is refused. Every
payload is schema-checked by the `ocpp` package (cs.errors stays empty)."""
import datetime
import os

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools import certs, keys, release, serve
from tools.vboard import VBoard


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def test_TC_CP_V16_SEC_signed_firmware_update(tmp_path):
    pem, pub, _ = keys.keygen(str(tmp_path / "keys" / "rel"))
    out = tmp_path / "rel"
    img2, _, _ = release.build(pem, "0.2.0", "sim", out=str(out))
    img3, _, _ = release.build(pem, "0.3.0", "sim", out=str(out))
    pki = tmp_path / "pki"
    rc, rk = certs.make_root(str(pki / "root"))
    sc, sk = certs.make_signing(str(pki / "signing"), rc, rk)
    # a signing certificate under another root of the same name (an impostor),
    # and an expired one of ours
    orc, ork = certs.make_root(str(pki / "other"))
    osc, osk = certs.make_signing(str(pki / "other-signing"), orc, ork)
    xsc, xsk = certs.make_signing(str(pki / "expired"), rc, rk, days=0)
    srv, port = serve.serve(str(out))
    url = lambda p: "http://127.0.0.1:%d/%s" % (port, os.path.basename(p))  # noqa: E731
    cs = CSMS(interval=300).start()
    b = VBoard(str(tmp_path / "cps"), id="cps", ocpp=cs.url, keys=[pub], ocpp_mfr_root=rc,
               config={"mqtt": {"host": ""}, "health": {"trial_s": 10},
                       "ocpp": {"signed_updates_only": True}}, wdt_ms=3000).start()
    sfw = lambda rid: [p["status"] for p in cs.calls("SignedFirmwareStatusNotification", "cps")  # noqa: E731
                       if p["requestId"] == rid]
    events = lambda: [(e["type"], e.get("techInfo", "")) for e in  # noqa: E731
                      cs.calls("SecurityEventNotification", "cps")
                      if e["type"].startswith("InvalidFirmware")]     # (not StartupOfTheDevice & co.)

    def signed(rid, img, key, cert, sig_key=None):
        f = certs.release_signature(key, cert, img)
        if sig_key is not None:
            f["signature"] = certs.sign_file(sig_key, img)     # by another key than the certificate's
        return cs.call("cps", call.SignedUpdateFirmware(request_id=rid, firmware=dict(
            f, location=url(img), retrieveDateTime=_now()))).status
    try:
        assert cs.wait(lambda: cs.calls("BootNotification", "cps"), 30)[0]["firmwareVersion"] == "0.1.0"
        cs.wait(lambda: cs.calls("StatusNotification", "cps"))
        r = cs.call("cps", call.GetConfiguration(key=["SignedUpdatesOnly"]))
        assert r.configuration_key == [{"key": "SignedUpdatesOnly", "readonly": True, "value": "true"}]

        # invalid certificate: not chaining to the installed root, then expired;
        # InvalidCertificate + InvalidFirmwareSigningCertificate, nothing starts
        assert signed(1, img2, osk, osc) == "InvalidCertificate"
        assert signed(2, img2, xsk, xsc) == "InvalidCertificate"
        cs.wait(lambda: len(events()) >= 2, 15, "two security events")
        ev = events()
        assert [t for t, _ in ev] == ["InvalidFirmwareSigningCertificate"] * 2, ev
        assert "bad signature" in ev[0][1] and "expired" in ev[1][1], ev
        assert b.get()["firmware"] == "Idle" and sfw(1) == [] and sfw(2) == []

        # unsigned UpdateFirmware with signed_updates_only: CALLERROR SecurityError + event
        with pytest.raises(OCPPError) as e:
            cs.call("cps", call.UpdateFirmware(location=url(img2), retrieve_date=_now()))
        assert e.value.code == "SecurityError"
        cs.wait(lambda: len(events()) >= 3, 15, "the refused UpdateFirmware's security event")
        assert events()[2][0] == "InvalidFirmwareSignature" and "unsigned" in events()[2][1]
        assert b.get()["firmware"] == "Idle" and not cs.calls("FirmwareStatusNotification", "cps")

        # invalid signature: the right certificate, the file signed by another key;
        # caught after the download, staging dropped, nothing installed
        assert signed(3, img2, sk, sc, osk) == "Accepted"
        cs.wait(lambda: "InvalidSignature" in sfw(3), 60, "InvalidSignature")
        assert sfw(3) == ["Downloading", "Downloaded", "InvalidSignature"], sfw(3)
        cs.wait(lambda: len(events()) >= 4, 15, "InvalidFirmwareSignature")
        assert events()[3][0] == "InvalidFirmwareSignature" and "file signature" in events()[3][1]
        g = b.get()
        assert g["version"] == "0.1.0" and g["firmware"] == "InvalidSignature"

        # TC_CP_V16_SEC signed update: installs, trial boot confirmed
        boots = b.boots
        assert signed(4, img2, sk, sc) == "Accepted"
        b.wait_boots(boots + 1, 90)
        cs.wait(lambda: sfw(4)[-1:] == ["Installed"], 90, "trial boot confirmed")
        assert sfw(4) == ["Downloading", "Downloaded", "SignatureVerified", "Installing",
                          "InstallRebooting", "Installed"], sfw(4)
        assert cs.calls("BootNotification", "cps")[-1]["firmwareVersion"] == "0.2.0"
        g = b.get()
        assert g["version"] == "0.2.0" and g["trial"] is False

        # a signed 0.3.0 whose trial boot fails (pilot shorted: the CP self-test
        # fails): rolled back; the BootNotification after it has 0.2.0 again
        b.control("short_cp")
        n_boot = len(cs.calls("BootNotification", "cps"))
        assert signed(5, img3, sk, sc) == "Accepted"
        cs.wait(lambda: len(cs.calls("BootNotification", "cps")) >= n_boot + 2, 120, "trial and rollback")
        assert [x["firmwareVersion"] for x in cs.calls("BootNotification", "cps")[n_boot:]][:2] == \
            ["0.3.0", "0.2.0"]
        cs.wait(lambda: "InstallationFailed" in sfw(5), 60, "InstallationFailed after the rollback")
        assert sfw(5)[:5] == ["Downloading", "Downloaded", "SignatureVerified", "Installing",
                              "InstallRebooting"] and sfw(5)[-1] == "InstallationFailed", sfw(5)
        g = b.get()
        assert g["version"] == "0.2.0" and g["trial"] is False
    finally:
        b.stop()
        cs.stop()
        srv.shutdown()
    assert cs.errors == [], cs.errors
