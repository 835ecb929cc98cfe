"""`make demo BACKEND=ocpp`: virtual chargers run by an OCPP 1.6J CSMS.

The story, told as it happens:
  1. a CSMS (the `ocpp` package, every message schema-checked), a signing
     key and release 0.2.0 served over HTTP;
  2. two virtual boards pointed at the CSMS (`vboard --ocpp`) boot and
     register; cp-1 needs authorization, cp-2 is free vend;
  3. the CSMS starts a session on cp-1 remotely and caps cp-2 at 10 A with a
     TxDefaultProfile; both charge;
  4. the CSMS goes down mid-session; cp-2's vehicle leaves while offline; the
     CSMS comes back and receives the queued StopTransaction, in order;
  5. the CSMS stops cp-1's session and updates its firmware (UpdateFirmware):
     download, install, trial boot, confirmed; cp-1 boots 0.2.0.
Work files go to build/demo-ocpp/.
"""
import datetime
import os
import shutil
import sys
import time

from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools import keys, release, serve
from tools.mpunix import ROOT
from tools.vboard import VBoard

T0 = time.time()


def say(who, text):
    print("[%5.1fs] %-6s %s" % (time.time() - T0, who, text), flush=True)


def _iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def run(demo_dir=None):
    """The demo; returns {"ok", "log", "errors", "versions"}."""
    d = demo_dir or os.path.join(ROOT, "build", "demo-ocpp")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cs, srv, boards = None, None, []
    seen = [0]

    def show():
        for (_, cid, action, p) in cs.log[seen[0]:]:
            brief = {k: v for k, v in p.items() if k in ("status", "connectorId", "idTag", "meterStart",
                                                          "meterStop", "reason", "transactionId",
                                                          "firmwareVersion")}
            say(cid, "-> %s %s" % (action, brief or ""))
        seen[0] = len(cs.log)

    try:
        pem, pub, _ = keys.keygen(os.path.join(d, "keys", "release"))
        img, _, _ = release.build(pem, "0.2.0", "sim", out=os.path.join(d, "rel"))
        srv, port = serve.serve(os.path.join(d, "rel"))
        cs = CSMS(interval=60).start()
        say("csms", "OCPP 1.6J CSMS on %s; release 0.2.0 on http://127.0.0.1:%d/" % (cs.url, port))
        cfg = {"mqtt": {"host": ""}, "health": {"trial_s": 10}}
        b1 = VBoard(os.path.join(d, "cp-1"), id="cp-1", ocpp=cs.url, keys=[pub], wdt_ms=3000,
                    config=dict(cfg, require_auth=True)).start()
        b2 = VBoard(os.path.join(d, "cp-2"), id="cp-2", ocpp=cs.url, keys=[pub], wdt_ms=3000,
                    config=cfg).start()
        boards = [b1, b2]
        for cid in ("cp-1", "cp-2"):
            cs.wait(lambda: cs.calls("StatusNotification", cid), 60, cid + " registered")
        show()
        b1.control("plug", state="C", max_current_a=16)
        b2.control("plug", state="C", max_current_a=32)
        r = cs.call("cp-1", call.RemoteStartTransaction(id_tag="DRIVER-1"))
        say("csms", "RemoteStartTransaction(cp-1, DRIVER-1): %s" % r.status)
        r = cs.call("cp-2", call.SetChargingProfile(connector_id=1, cs_charging_profiles={
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": {
                "startSchedule": _iso(), "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}}))
        say("csms", "SetChargingProfile(cp-2, TxDefaultProfile 10 A): %s" % r.status)
        b2.wait_for(lambda: b2.get()["offered_a"] == 10, 20, what="cp-2 at 10 A")
        b1.wait_for(lambda: b1.get()["relay"], 20, what="cp-1 charging")
        cs.wait(lambda: len(cs.started) >= 2, 20, "two transactions")
        show()
        say("cp-2", "offers %s A (profile), cp-1 offers %s A" % (b2.get()["offered_a"],
                                                               b1.get()["offered_a"]))
        b2.wait_for(lambda: b2.get()["energy_wh"] > 5, 30, what="cp-2 energy")
        say("csms", "going down mid-session")
        cs.stop()
        b2.wait_for(lambda: b2.get()["ocpp"] != "accepted", 20, what="cp-2 offline")
        b2.control("unplug")
        b2.wait_for({"session_active": False}, 10)
        say("cp-2", "vehicle left while the CSMS was down: StopTransaction queued on flash")
        cs.start()
        say("csms", "back")
        cs.wait(lambda: cs.calls("StopTransaction", "cp-2"), 60, "cp-2's queued Stop")
        show()
        tid = cs.tx_id("DRIVER-1")
        r = cs.call("cp-1", call.RemoteStopTransaction(transaction_id=tid))
        say("csms", "RemoteStopTransaction(cp-1, %d): %s" % (tid, r.status))
        b1.control("unplug")
        cs.call("cp-1", call.UpdateFirmware(
            location="http://127.0.0.1:%d/%s" % (port, os.path.basename(img)), retrieve_date=_iso()))
        say("csms", "UpdateFirmware(cp-1, 0.2.0)")
        cs.wait(lambda: [p for p in cs.calls("FirmwareStatusNotification", "cp-1")
                         if p["status"] == "Installed"], 120, "cp-1 updated and confirmed")
        show()
        versions = {b.id: b.get()["version"] for b in boards}
        say("demo", "versions: %s; schema violations: %d" % (versions, len(cs.errors)))
        ok = versions == {"cp-1": "0.2.0", "cp-2": "0.1.0"} and not cs.errors
        return {"ok": ok, "log": [(c, a) for (_, c, a, _) in cs.log], "errors": cs.errors,
                "versions": versions}
    finally:
        for b in boards:
            b.stop()
        if cs is not None:
            cs.stop()
        if srv is not None:
            srv.shutdown()


def main(argv=None):
    return 0 if run()["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
