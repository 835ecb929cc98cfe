"""A whole (compressed) day of a charger's life against the `ocpp` CSMS
(issue 12 "Done when"): ONE virtual board, the real bootstrap and agent on
the unix port, against tests/prep/csms.py (every CALL from the board checked
against the OCA JSON schemas).

cold boot accepted -> a regular session online (Authorize, Start, MeterValues,
Stop) -> a remote start with a TxProfile, a ChargePointMaxProfile applied and
cleared, remote stop -> the CSMS killed mid-transaction (the offer falls back
with OfflineFallbackTimeout), a session stopped and one started offline, a
power cycle while offline -> the CSMS back: every queued transaction message
delivered once, in order, with the transactionIds it assigned -> a signed
firmware update (SignedUpdateFirmware: the board was provisioned with the
Manufacturer root, the file signed with `evsectl certs sign-file --cert`)
whose trial boot fails (CP shorted: the self-test fails) and rolls back
-> at the end no schema error and a consistent transaction ledger.

Intervals are shortened through ChangeConfiguration (HeartbeatInterval,
MeterValueSampleInterval, OfflineFallbackTimeout) and the health trial; the
test waits for conditions only."""
import datetime
import os

from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools import certs, keys, release, serve
from tools.vboard import VBoard

CP = "cpday"


def _now(dt_s=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=dt_s)
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _status(cs, connector=1):
    s = [p for p in cs.calls("StatusNotification", CP) if p["connectorId"] == connector]
    return s[-1]["status"] if s else None


def _offer(b, amps, timeout=20, source=None):
    return b.wait_for(lambda: b.get()["offered_a"] == amps and (
        source is None or b.get()["source"] == source), timeout, what="offer %s A %s" % (amps, source or ""))


def _barrier(cs):
    # a CALL round trip: the board has handled everything the CSMS sent before it
    cs.call(CP, call.GetConfiguration(key=["HeartbeatInterval"]))


def _configure(cs, key, value):
    assert cs.call(CP, call.ChangeConfiguration(key=key, value=str(value))).status == "Accepted", key


def _tx_profile(pid, amps):
    return {"chargingProfileId": pid, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps}]}}


def _update_firmware(cs, url, img, pki):
    """Ask for a signed firmware update (SignedUpdateFirmware: the signing
    certificate chains to the Manufacturer root the board was provisioned
    with, the signature is over the release file); returns a function giving
    the statuses the board reported for it (SignedFirmwareStatusNotification)."""
    f = certs.release_signature(pki["key"], pki["cert"], img)
    r = cs.call(CP, call.SignedUpdateFirmware(request_id=23, firmware=dict(
        f, location=url, retrieveDateTime=_now())))
    assert r.status == "Accepted", r
    return lambda: [p["status"] for p in cs.calls("SignedFirmwareStatusNotification", CP)
                    if p["requestId"] == 23]


def test_a_day_of_a_charger(tmp_path):
    pem, pub, _ = keys.keygen(str(tmp_path / "keys" / "rel"))
    out = tmp_path / "rel"
    img, _, _ = release.build(pem, "0.2.0", "sim", out=str(out))
    rc, rk = certs.make_root(str(tmp_path / "pki"))
    sc, sk = certs.make_signing(str(tmp_path / "pki"), rc, rk)
    srv, port = serve.serve(str(out))
    cs = CSMS(interval=300).start()
    b = VBoard(str(tmp_path / CP), id=CP, ocpp=cs.url, keys=[pub], wdt_ms=3000, ocpp_mfr_root=rc,
               config={"mqtt": {"host": ""}, "max_current_a": 32, "fallback_current_a": 6,
                       "health": {"trial_s": 10}})
    b.start()
    try:
        # ---- 06:00 cold boot -------------------------------------------------------------
        boot = cs.wait(lambda: cs.calls("BootNotification", CP), 30, "BootNotification")[0]
        assert boot["firmwareVersion"] == "0.1.0"
        cs.wait(lambda: _status(cs, 0) == "Available" and _status(cs) == "Available", 20)
        assert b.get()["ocpp"] == "accepted"
        _configure(cs, "HeartbeatInterval", 3)
        _configure(cs, "MeterValueSampleInterval", 1)
        cs.wait(lambda: cs.calls("Heartbeat", CP), 15, "a heartbeat")

        # ---- 07:30 a regular session: RFID card, plug in, charge, unplug -----------------------
        cs.auth["DAY1"] = "Accepted"
        b.control("tag", tag="DAY1")
        cs.wait(lambda: cs.calls("Authorize", CP), 10, "Authorize")
        _barrier(cs)
        b.control("plug", state="C", max_current_a=32)
        st1 = cs.wait(lambda: cs.calls("StartTransaction", CP), 20)[0]
        assert st1["idTag"] == "DAY1"
        tid1 = cs.tx_id("DAY1")
        cs.wait(lambda: _status(cs) == "Charging", 20)
        b.wait_for(lambda: b.get()["energy_wh"] > st1["meterStart"] + 5, 20, what="energy")
        cs.wait(lambda: [m for m in cs.calls("MeterValues", CP) if m.get("transactionId") == tid1], 20)
        b.control("unplug")
        sp1 = cs.wait(lambda: cs.calls("StopTransaction", CP), 20)[0]
        assert (sp1["transactionId"], sp1["reason"]) == (tid1, "EVDisconnected")
        cs.wait(lambda: _status(cs) == "Available", 20)

        # ---- 12:00 remote start with a TxProfile; a site limit applied and cleared; remote stop --
        r = cs.call(CP, call.RemoteStartTransaction(id_tag="APP2", connector_id=1,
                                                    charging_profile=_tx_profile(20, 10)))
        assert r.status == "Accepted"
        b.control("plug", state="C", max_current_a=32)
        tid2 = cs.tx_id("APP2")
        _offer(b, 10, source="ocpp")
        comp = cs.call(CP, call.GetCompositeSchedule(connector_id=1, duration=600))
        assert comp.charging_schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 10.0}]
        site = {"chargingProfileId": 21, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {"chargingRateUnit": "A", "startSchedule": _now(-60),
                                     "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8}]}}
        assert cs.call(CP, call.SetChargingProfile(connector_id=0, cs_charging_profiles=site)).status \
            == "Accepted"
        _offer(b, 8)
        assert cs.call(CP, call.ClearChargingProfile(id=21)).status == "Accepted"
        _offer(b, 10)
        assert cs.call(CP, call.RemoteStopTransaction(transaction_id=tid2)).status == "Accepted"
        sp2 = cs.wait(lambda: [s for s in cs.calls("StopTransaction", CP) if s["transactionId"] == tid2], 20)
        assert sp2[0]["reason"] == "Remote"
        b.control("unplug")
        cs.wait(lambda: _status(cs) == "Available", 20)

        # ---- 17:00 the CSMS dies mid-transaction; the day goes on offline ------------------------
        _configure(cs, "OfflineFallbackTimeout", 3)
        b.control("plug", state="C", max_current_a=32)
        tid3 = cs.wait(lambda: [t for (c, g, t) in cs.started if c == CP and t not in (tid1, tid2)], 20)[0]
        cs.wait(lambda: _status(cs) == "Charging", 20)
        _offer(b, 32)
        cs.stop()
        b.wait_for(lambda: b.get()["ocpp"] in ("offline", "connecting"), 15, what="link down")
        _offer(b, 6, source="fallback")                 # quiet for 3 s: the installer's fallback
        e = b.get()["energy_wh"]
        b.wait_for(lambda: b.get()["energy_wh"] > e + 3, 20, what="charging on, offline")
        b.control("unplug")                             # its StopTransaction waits on flash
        b.wait_for({"session_active": False}, 10)
        b.control("plug", state="C", max_current_a=32)  # a session started offline
        b.wait_for(lambda: b.get()["relay"], 20, what="the offline session charging")
        boots = b.boots
        b.power_cycle()                                 # power cut while offline, mid-session
        b.wait_boots(boots + 1, 30)
        b.wait_for(lambda: b.get()["relay"], 30, what="charging after the power cut")
        g = b.get()
        assert (g["offered_a"], g["source"]) == (6, "fallback"), "still quiet after the reboot: %s" % g
        n_boot = len(cs.calls("BootNotification", CP))
        cs.start()                                      # the CSMS is back, same address
        cs.wait(lambda: len(cs.calls("BootNotification", CP)) > n_boot, 60, "BootNotification after reboot")
        cs.wait(lambda: len(cs.calls("StartTransaction", CP)) >= 5, 60, "the queued Starts")
        cs.wait(lambda: len(cs.calls("StopTransaction", CP)) >= 4, 30, "the queued Stops")
        _offer(b, 32, 30)                               # heard again: the fallback is lifted
        starts = cs.calls("StartTransaction", CP)
        ids = [t for (c, _, t) in cs.started if c == CP]
        assert len(starts) == 5 and len(ids) == 5, "each StartTransaction once: %s" % starts
        assert ids[:3] == [tid1, tid2, tid3]
        tx = [(a, p.get("transactionId")) for a, p in zip(cs.actions(CP), cs.calls(cid=CP))
              if a in ("StartTransaction", "StopTransaction")]
        assert tx == [("StartTransaction", None), ("StopTransaction", tid1),
                      ("StartTransaction", None), ("StopTransaction", tid2),
                      ("StartTransaction", None), ("StopTransaction", tid3),   # stopped offline
                      ("StartTransaction", None), ("StopTransaction", ids[3]),  # started offline, power cut
                      ("StartTransaction", None)], tx                           # after the reboot
        stops = {s["transactionId"]: s for s in cs.calls("StopTransaction", CP)}
        assert stops[tid3]["reason"] == "EVDisconnected" and stops[ids[3]]["reason"] == "PowerLoss"
        cs.wait(lambda: _status(cs) == "Charging", 20)
        b.control("unplug")
        cs.wait(lambda: ids[4] in [s["transactionId"] for s in cs.calls("StopTransaction", CP)], 20)
        cs.wait(lambda: _status(cs) == "Available", 20)

        # ---- 23:00 a signed firmware update; its trial boot fails (CP shorted) and rolls back ----
        b.control("short_cp")
        n_boot = len(cs.calls("BootNotification", CP))
        fw = _update_firmware(cs, "http://127.0.0.1:%d/%s" % (port, os.path.basename(img)), img,
                              {"key": sk, "cert": sc})
        cs.wait(lambda: len(cs.calls("BootNotification", CP)) >= n_boot + 2, 120, "trial boot and rollback")
        assert [x["firmwareVersion"] for x in cs.calls("BootNotification", CP)[n_boot:]][:2] == \
            ["0.2.0", "0.1.0"]
        cs.wait(lambda: "InstallationFailed" in fw(), 60, "InstallationFailed after the rollback")
        seq = fw()
        assert seq.index("Downloading") < seq.index("Downloaded") < seq.index("SignatureVerified") \
            < seq.index("Installing") < seq.index("InstallationFailed"), seq
        g = b.get()
        assert g["version"] == "0.1.0" and g["trial"] is False

        # ---- midnight: the books ---------------------------------------------------------------
        starts = cs.calls("StartTransaction", CP)
        ids = [t for (c, _, t) in cs.started if c == CP]
        stops = cs.calls("StopTransaction", CP)
        assert len(starts) == len(ids) == 5 and len(set(ids)) == 5
        by_id = {}
        for s in stops:
            assert s["transactionId"] not in by_id, "a second StopTransaction for %s" % s["transactionId"]
            by_id[s["transactionId"]] = s
        assert sorted(by_id) == sorted(ids), (ids, stops)
        for st, tid in zip(starts, ids):
            assert by_id[tid]["meterStop"] >= st["meterStart"], (st, by_id[tid])
        for a, nxt in zip(starts, starts[1:]):
            assert a["meterStart"] <= nxt["meterStart"]
    finally:
        b.stop()
        cs.stop()
        srv.shutdown()
    assert cs.errors == [], cs.errors
