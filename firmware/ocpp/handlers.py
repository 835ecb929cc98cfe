# The CALLs a CSMS sends to the charge point (OCPP 1.6J core and remote
# trigger): one function per action, f(link, payload) -> answer payload, or
# (payload, fn) where fn runs after the answer is queued (Reset). Payloads
# are checked first (rpc.get/only raise CallError); a refused request
# changes nothing. Kept apart from link.py so that neither module needs a
# large contiguous block of heap to load. link.py imports this module only
# while it answers a CALL and drops it after (link.ACTIONS lists the names).
import time
from firmware.ocpp import rpc
from firmware.ocpp.link import KEYS, MEASURANDS, write_json, join

_LATCHED = ("relay_welded", "rcd_latched")   # cleared on site only, never remotely
_VENDOR_SIGNED = "SignedUpdatesOnly"          # GetConfiguration only (not in link.KEYS: heap)


def _latched(lk):
    for f in lk.evse.active_faults():
        if f in _LATCHED:
            return True
    return False


def RemoteStartTransaction(lk, p):
    # chargingProfile (OCPP 1.6 5.11): a TxProfile without transactionId, for the
    # transaction this remote start creates; checked as SetChargingProfile checks
    # it (malformed: CALLERROR), another purpose or a transactionId: Rejected.
    # Nothing changes unless the answer is Accepted.
    rpc.only(p, ("connectorId", "idTag", "chargingProfile"))
    tag = rpc.get(p, "idTag", str, hi=20)
    cid = rpc.get(p, "connectorId", int, False)
    cp = rpc.get(p, "chargingProfile", dict, False)
    sm = lk.smart if cp is None else lk.smart_on()   # smart charging: kept once a profile came
    if cp is not None:
        cp = sm.check(cp)               # malformed: CallError before anything else
    if cid is not None and cid != 1 or lk.inoperative or lk._tx is not None \
            or lk.evse.session is not None or _latched(lk):
        return {"status": "Rejected"}
    if sm is not None and sm.remote_profile(cp, tag) != "Accepted":
        return {"status": "Rejected"}   # not a TxProfile, or with a transactionId
    if lk.conf["AuthorizeRemoteTxRequests"]:
        lk.present_tag(tag)
    else:
        lk.evse.authorize(tag)
    return {"status": "Accepted"}

def RemoteStopTransaction(lk, p):
    rpc.only(p, ("transactionId",))
    tid = rpc.get(p, "transactionId", int)
    tx = lk._tx
    if tx is None or lk._id_of(tx["ref"]) != tid:
        return {"status": "Rejected"}
    lk.evse.stop_session("remote")
    return {"status": "Accepted"}

def Reset(lk, p):
    rpc.only(p, ("type",))
    kind = rpc.get(p, "type", str, choices=("Hard", "Soft"))
    if _latched(lk):
        return {"status": "Rejected"}   # a reboot would forget the latched fault: fail closed
    reason = kind + "Reset"
    lk._reset_kind = reason
    if lk._tx is not None:
        sess = lk.evse.session
        lk._end_tx(reason, sess.get("energy_wh") if sess else None)
        lk.evse.stop_session(reason)
    lk._save_state()

    def after():
        lk.agent._on_reset("hard" if kind == "Hard" else "soft")
    return {"status": "Accepted"}, after

def ChangeAvailability(lk, p):
    rpc.only(p, ("connectorId", "type"))
    cid = rpc.get(p, "connectorId", int, lo=0)
    typ = rpc.get(p, "type", str, choices=("Inoperative", "Operative"))
    if cid > 1:
        return {"status": "Rejected"}
    inop = typ == "Inoperative"
    if inop and lk.evse.session is not None:
        lk._inop_pending = inop
        return {"status": "Scheduled"}
    lk._set_avail(inop)
    return {"status": "Accepted"}


def UnlockConnector(lk, p):
    rpc.only(p, ("connectorId",))
    rpc.get(p, "connectorId", int, lo=1)
    return {"status": "NotSupported"}    # tethered cable: nothing to unlock

def GetConfiguration(lk, p):
    rpc.only(p, ("key",))
    keys = rpc.get(p, "key", list, False)
    known = []
    unknown = []
    for k in (keys if keys else tuple(KEYS) + (_VENDOR_SIGNED,)):
        if type(k) is not str:
            raise rpc.CallError(rpc.TYPE, "key must be a list of strings")
        if k == _VENDOR_SIGNED:
            # vendor key, read-only: the installer setting ocpp.signed_updates_only
            known.append({"key": k, "readonly": True,
                          "value": "true" if lk.cfg.get("signed_updates_only") else "false"})
        elif k in KEYS:
            v = lk.conf[k]
            known.append({"key": k, "readonly": KEYS[k][1],
                          "value": ("true" if v else "false") if type(v) is bool else str(v)})
        else:
            unknown.append(k[:50])
    r = {"configurationKey": known}
    if unknown:
        r["unknownKey"] = unknown
    return r

def ChangeConfiguration(lk, p):
    rpc.only(p, ("key", "value"))
    k = rpc.get(p, "key", str, hi=50)
    v = rpc.get(p, "value", str, hi=500)
    d = KEYS.get(k)
    if d is None:
        return {"status": "Rejected" if k == _VENDOR_SIGNED else "NotSupported"}
    kind, ro = d[0], d[1]
    if ro:
        return {"status": "Rejected"}
    if kind == "i":
        if not v.isdigit() or len(v) > 6:
            return {"status": "Rejected"}
        val = int(v)
    elif kind == "b":
        if v.lower() not in ("true", "false"):
            return {"status": "Rejected"}
        val = v.lower() == "true"
    else:
        for m in v.split(","):
            if m not in MEASURANDS:
                return {"status": "Rejected"}
        val = v
    lk.conf[k] = val
    if k == "HeartbeatInterval" and lk.registration == "Accepted":
        lk._hb_at = time.ticks_add(lk._t_call, val * 1000) if val else None
    stored = {}
    for kk in KEYS:
        if not KEYS[kk][1] and lk.conf[kk] != KEYS[kk][2]:
            stored[kk] = lk.conf[kk]
    write_json(join(lk._dir, "conf.json"), stored)
    return {"status": "Accepted"}

def TriggerMessage(lk, p):
    rpc.only(p, ("requestedMessage", "connectorId"))
    m = rpc.get(p, "requestedMessage", str, choices=TRIGGERS)
    cid = rpc.get(p, "connectorId", int, False, lo=0)
    if cid is not None and cid > 1:
        return {"status": "Rejected"}
    if m == "BootNotification":
        lk.registration = None
        lk._boot_at = time.ticks_add(lk.agent._now, 0)
    elif m == "Heartbeat":
        lk._enqueue("Heartbeat", {}, "q", None)
    elif m == "StatusNotification":
        if cid is None or cid == 0:
            lk._st_sent[0] = None
        if cid is None or cid == 1:
            lk._st_sent[1] = None
    elif m == "MeterValues":
        lk._meter_values("Trigger", lk.conf["MeterValuesSampledData"], None)
    elif m == "FirmwareStatusNotification":
        lk.firmware_status(lk.fw_status, None, True)
    else:
        return {"status": "NotImplemented"}
    return {"status": "Accepted"}

def ExtendedTriggerMessage(lk, p):
    # security extension: the same triggers; FirmwareStatusNotification is
    # answered with SignedFirmwareStatusNotification
    rpc.only(p, ("requestedMessage", "connectorId"))
    m = rpc.get(p, "requestedMessage", str, choices=EXT_TRIGGERS)
    cid = rpc.get(p, "connectorId", int, False, lo=0)
    if m in ("LogStatusNotification", "SignChargePointCertificate"):
        return {"status": "NotImplemented"}
    if m == "FirmwareStatusNotification":
        if cid is not None and cid > 1:
            return {"status": "Rejected"}
        fw = lk._fw or {}
        if fw.get("signed"):
            q = {"status": lk.fw_status, "requestId": fw.get("rid") or 0}
        else:
            q = {"status": "Idle"}     # no signed update requested since the last one ended
        lk._enqueue("SignedFirmwareStatusNotification", q, "q", None)
        return {"status": "Accepted"}
    q = {"requestedMessage": m}
    if cid is not None:
        q["connectorId"] = cid
    return TriggerMessage(lk, q)


def DataTransfer(lk, p):
    rpc.get(p, "vendorId", str, hi=255)
    return {"status": "UnknownVendorId"}


def SetChargingProfile(lk, p):
    return {"status": lk.smart_on().set_profile(p)}


def ClearChargingProfile(lk, p):
    return {"status": lk.smart_on().clear(p)}


def GetCompositeSchedule(lk, p):
    return lk.smart_on().composite(p)


def UpdateFirmware(lk, p):
    # OCPP 1.6 core: driven by the same update job as MQTT (scheduling, waiting
    # for the session to end, trial boot, health checks, rollback)
    rpc.only(p, ("location", "retrieveDate", "retries", "retryInterval"))
    loc = rpc.get(p, "location", str, hi=512)
    when = rpc.get(p, "retrieveDate", str, hi=40)
    if lk.cfg.get("signed_updates_only"):
        # installer setting ocpp.signed_updates_only: only SignedUpdateFirmware
        lk.security_event("InvalidFirmwareSignature",
                          "unsigned UpdateFirmware refused: signed updates required")
        raise rpc.CallError("SecurityError", "signed updates required: use SignedUpdateFirmware")
    req = {"location": loc, "retrieveDateTime": when}
    for k in ("retries", "retryInterval"):
        v = rpc.get(p, k, int, False, lo=0)
        if v is not None:
            req[k] = v
    lk.start_update(req, False)
    return {}


TRIGGERS = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
             "Heartbeat", "MeterValues", "StatusNotification")
EXT_TRIGGERS = ("BootNotification", "LogStatusNotification", "FirmwareStatusNotification",
                "Heartbeat", "MeterValues", "SignChargePointCertificate", "StatusNotification")
