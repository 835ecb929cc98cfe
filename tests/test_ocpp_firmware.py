"""OCPP firmware management on a virtual board against the `ocpp` CSMS:
UpdateFirmware drives the same update job as MQTT (download over HTTP,
signature check, install into the other slot, trial boot, health check
confirmed) and the FirmwareStatusNotifications report it; the next
BootNotification carries the new version; an update whose trial boot fails
rolls back and the BootNotification after it carries the old version again,
with FirmwareStatusNotification InstallationFailed. The signed update of the
security whitepaper (SignedUpdateFirmware) is in tests/test_ocpp_signed_fw.py;
here only its refusal on a board with no Manufacturer root installed."""
import datetime
import os

from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools import certs, keys, release, serve
from tools.vboard import VBoard


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def test_TC_044_firmware_update(tmp_path):
    pem, pub, _ = keys.keygen(str(tmp_path / "keys" / "rel"))
    out = tmp_path / "rel"
    img, _, _ = release.build(pem, "0.2.0", "sim", out=str(out))
    img3, _, _ = release.build(pem, "0.3.0", "sim", out=str(out))
    srv, port = serve.serve(str(out))
    cs = CSMS(interval=300).start()
    b = VBoard(str(tmp_path / "cpf"), id="cpf", ocpp=cs.url, keys=[pub],
               config={"mqtt": {"host": ""}, "health": {"trial_s": 10}}, wdt_ms=3000).start()
    try:
        boot = cs.wait(lambda: cs.calls("BootNotification", "cpf"), 30)[0]
        assert boot["firmwareVersion"] == "0.1.0"
        cs.wait(lambda: cs.calls("StatusNotification", "cpf"))
        # a well-formed signed request, but this board trusts no Manufacturer
        # root: InvalidCertificate + SecurityEventNotification, no job
        rc, rk = certs.make_root(str(tmp_path / "pki"))
        sc, sk = certs.make_signing(str(tmp_path / "pki"), rc, rk)
        fields = certs.release_signature(sk, sc, img)
        r = cs.call("cpf", call.SignedUpdateFirmware(request_id=7, firmware=dict(
            fields, location="http://127.0.0.1:%d/%s" % (port, os.path.basename(img)),
            retrieveDateTime=_now())))
        assert r.status == "InvalidCertificate"
        ev = cs.wait(lambda: [e for e in cs.calls("SecurityEventNotification", "cpf")
                              if e["type"] != "StartupOfTheDevice"])[0]
        assert ev["type"] == "InvalidFirmwareSigningCertificate" and "no Manufacturer root" in ev["techInfo"]
        assert b.get()["firmware"] == "Idle" and not cs.calls("SignedFirmwareStatusNotification", "cpf")
        boots = b.boots
        cs.call("cpf", call.UpdateFirmware(
            location="http://127.0.0.1:%d/%s" % (port, os.path.basename(img)), retrieve_date=_now()))
        fw = lambda: [p["status"] for p in cs.calls("FirmwareStatusNotification", "cpf")]  # noqa
        cs.wait(lambda: "Installing" in fw(), 90, "download and install")
        b.wait_boots(boots + 1, 60)
        # the install step held the link's suspend until Installing was out, then
        # suspended it (buffers released) for the unpack; it reconnects at once,
        # and with nothing left to send the reset may cut that reconnect
        con = b.console()
        i = con.rfind("version 0.1.0")
        j = con.find("power-on", i)
        j = len(con) if j < 0 else j
        assert 1 <= con.count("ocpp: connected", i, j) <= 2, con[i:j][-3000:]
        cs.wait(lambda: len(cs.calls("BootNotification", "cpf")) >= 2, 60)
        assert cs.calls("BootNotification", "cpf")[-1]["firmwareVersion"] == "0.2.0"
        cs.wait(lambda: fw()[-1:] == ["Installed"], 60, "trial boot confirmed")
        seq = fw()
        assert seq.index("Downloading") < seq.index("Downloaded") < seq.index("Installing") \
            < seq.index("Installed"), seq
        g = b.get()
        assert g["version"] == "0.2.0" and g["trial"] is False
        # 0.3.0 on a board whose pilot is shorted: the trial boot's CP self-test
        # fails, the board rolls back; the next BootNotification has the old version
        b.control("short_cp")
        n_boot = len(cs.calls("BootNotification", "cpf"))
        n_fw = len(fw())
        cs.call("cpf", call.UpdateFirmware(
            location="http://127.0.0.1:%d/%s" % (port, os.path.basename(img3)), retrieve_date=_now()))
        cs.wait(lambda: len(cs.calls("BootNotification", "cpf")) >= n_boot + 2, 120, "trial and rollback")
        assert [x["firmwareVersion"] for x in cs.calls("BootNotification", "cpf")[n_boot:]][:2] == \
            ["0.3.0", "0.2.0"]
        cs.wait(lambda: "InstallationFailed" in fw()[n_fw:], 60, "InstallationFailed after rollback")
        g = b.get()
        assert g["version"] == "0.2.0" and g["trial"] is False
    finally:
        b.stop()
        cs.stop()
        srv.shutdown()
    assert cs.errors == [], cs.errors
