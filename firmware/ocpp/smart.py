# OCPP 1.6 smart charging (Smart Charging profile, OCPP 1.6 edition 2
# section 3.13): charging profiles of purpose ChargePointMaxProfile
# (connector 0), TxDefaultProfile and TxProfile, kinds Absolute / Recurring
# (Daily, Weekly) / Relative, schedules in A or W (W converted with the grid
# voltage and phases). The limit at time t: per purpose, the valid profile
# with the highest stackLevel whose schedule has a period at t; TxProfile
# overrides TxDefaultProfile; the result is the lower of that and
# ChargePointMaxProfile. It feeds the charging core as limit source "ocpp"
# (Evse.set_limit: it can lower the offer, never raise it above the rating).
# Profiles are persisted in <root>/ocpp/profiles.json; a TxProfile ends with
# its transaction. RemoteStartTransaction's chargingProfile (a TxProfile, no
# transactionId) waits in RAM, like the authorization it comes with, and is
# installed for the transaction that authorization starts (OCPP 1.6 5.11).
import time
import json
from firmware.ocpp import rpc

LIMIT = "ocpp"
_MAX_PROFILES = 8
_MAX_PERIODS = 24
_MAX_STACK = 8
_PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
_KINDS = ("Absolute", "Recurring", "Relative")
_NO_LIMIT = 1000.0


def _secs(s, name):
    from firmware.ocpp.link import parse_iso
    t = parse_iso(s) if type(s) is str else None
    if t is None:
        raise rpc.CallError(rpc.PROPERTY, "%s is not a date-time" % name)
    return time.mktime(t)


def _check(cp):
    # the csChargingProfiles object -> a compact dict, or CallError
    g = rpc.get
    rpc.only(cp, ("chargingProfileId", "transactionId", "stackLevel", "chargingProfilePurpose",
                  "chargingProfileKind", "recurrencyKind", "validFrom", "validTo", "chargingSchedule"))
    p = {"id": g(cp, "chargingProfileId", int), "tx": g(cp, "transactionId", int, False),
         "level": g(cp, "stackLevel", int, lo=0),
         "purpose": g(cp, "chargingProfilePurpose", str, choices=_PURPOSES),
         "kind": g(cp, "chargingProfileKind", str, choices=_KINDS),
         "rec": g(cp, "recurrencyKind", str, False, choices=("Daily", "Weekly"))}
    if p["level"] > _MAX_STACK:
        raise rpc.CallError(rpc.PROPERTY, "stackLevel above %d" % _MAX_STACK)
    if p["kind"] == "Recurring" and p["rec"] is None:
        raise rpc.CallError(rpc.OCCURENCE, "Recurring needs recurrencyKind")
    vf = g(cp, "validFrom", str, False)
    vt = g(cp, "validTo", str, False)
    p["from"] = None if vf is None else _secs(vf, "validFrom")
    p["to"] = None if vt is None else _secs(vt, "validTo")
    cs = g(cp, "chargingSchedule", dict)
    rpc.only(cs, ("duration", "startSchedule", "chargingRateUnit", "chargingSchedulePeriod",
                  "minChargingRate"))
    p["dur"] = g(cs, "duration", int, False, lo=0)
    ss = g(cs, "startSchedule", str, False)
    p["start"] = None if ss is None else _secs(ss, "startSchedule")
    if p["kind"] != "Relative" and p["start"] is None:
        raise rpc.CallError(rpc.OCCURENCE, "Absolute and Recurring need startSchedule")
    p["unit"] = g(cs, "chargingRateUnit", str, choices=("A", "W"))
    g(cs, "minChargingRate", float, False, lo=0)
    periods = g(cs, "chargingSchedulePeriod", list)
    if not periods or len(periods) > _MAX_PERIODS:
        raise rpc.CallError(rpc.PROPERTY, "1..%d schedule periods" % _MAX_PERIODS)
    out = []
    last = -1
    for sp in periods:
        if type(sp) is not dict:
            raise rpc.CallError(rpc.TYPE, "chargingSchedulePeriod must hold objects")
        rpc.only(sp, ("startPeriod", "limit", "numberPhases"))
        st = g(sp, "startPeriod", int, lo=0)
        if st <= last or (not out and st != 0):
            raise rpc.CallError(rpc.PROPERTY, "startPeriod must start at 0 and increase")
        last = st
        out.append([st, g(sp, "limit", float, lo=0), g(sp, "numberPhases", int, False, lo=1, hi=3)])
    p["periods"] = out
    return p


class Smart:
    def __init__(self, link):
        self.link = link
        self.profiles = []
        self._path = link._dir + "/profiles.json"
        self._next = None
        self.limit_a = None
        self.pending = None     # RemoteStart's TxProfile: [profile, idTag, wall time s]
        self._boot = True       # first apply(): TxProfiles of a transaction a reboot ended go
        try:
            with open(self._path) as f:
                d = json.load(f)
            if type(d) is list:
                self.profiles = d
        except (OSError, ValueError):
            pass

    def _save(self):
        from firmware.ocpp.link import write_json
        write_json(self._path, self.profiles)

    # ---- CSMS requests ----------------------------------------------------------
    def check(self, cp):
        """A csChargingProfiles object -> the checked profile (CallError when malformed)."""
        return _check(cp)

    def remote_profile(self, prof, tag):
        """RemoteStartTransaction: prof (from check(), or None: no profile, an
        older one waiting is dropped). Not a TxProfile, or one with a
        transactionId -> "Rejected". Call after every other check: "Accepted"
        keeps it for the transaction the remote start creates."""
        if prof is None:
            self.pending = None
            return "Accepted"
        if prof["purpose"] != "TxProfile" or prof["tx"] is not None:
            return "Rejected"
        prof["cid"] = 1
        if len(self._others(prof)) >= _MAX_PROFILES:
            return "Rejected"
        self.pending = [prof, tag, int(self.link._now_s())]
        return "Accepted"

    def _begin_tx(self, pd, tx):
        # the first transaction after the remote start (apply() runs at once when
        # one starts): the profile becomes its TxProfile when the idTag matches
        # and it started within ConnectionTimeOut s
        self.pending = None
        if pd[1] != tx["tag"] or tx["t0"] - pd[2] > self.link.conf["ConnectionTimeOut"]:
            return False
        prof = pd[0]
        prof["ref"] = tx["ref"]
        keep = self._others(prof)
        keep.append(prof)
        self.profiles = keep
        self._save()
        self._next = None
        return True

    def _others(self, prof):
        # the profiles a new one leaves in place (same id, or same purpose, level and connector: replaced)
        return [q for q in self.profiles if q["id"] != prof["id"] and not (
            q["purpose"] == prof["purpose"] and q["level"] == prof["level"] and q["cid"] == prof["cid"])]

    def set_profile(self, p):
        rpc.only(p, ("connectorId", "csChargingProfiles"))
        cid = rpc.get(p, "connectorId", int, lo=0)
        prof = _check(rpc.get(p, "csChargingProfiles", dict))
        prof["cid"] = cid
        lk = self.link
        if cid > 1:
            return "Rejected"
        purpose = prof["purpose"]
        if purpose == "ChargePointMaxProfile" and cid != 0:
            return "Rejected"
        if purpose == "TxProfile":
            tx = lk._tx
            if cid != 1 or tx is None:
                return "Rejected"
            tid = lk._id_of(tx["ref"])
            if prof["tx"] is not None and prof["tx"] != tid:
                return "Rejected"
            prof["ref"] = tx["ref"]
        keep = self._others(prof)
        if len(keep) >= _MAX_PROFILES:
            return "Rejected"
        keep.append(prof)
        self.profiles = keep
        self._save()
        self._next = None
        return "Accepted"

    def clear(self, p):
        rpc.only(p, ("id", "connectorId", "chargingProfilePurpose", "stackLevel"))
        i = rpc.get(p, "id", int, False)
        cid = rpc.get(p, "connectorId", int, False)
        pur = rpc.get(p, "chargingProfilePurpose", str, False, choices=_PURPOSES)
        lv = rpc.get(p, "stackLevel", int, False)
        keep = []
        for q in self.profiles:
            if i is not None:
                hit = q["id"] == i
            else:
                hit = (cid is None or q["cid"] == cid) and (pur is None or q["purpose"] == pur) \
                    and (lv is None or q["level"] == lv)
            if not hit:
                keep.append(q)
        if len(keep) == len(self.profiles):
            return "Unknown"
        self.profiles = keep
        self._save()
        self._next = None
        return "Accepted"

    def composite(self, p):
        rpc.only(p, ("connectorId", "duration", "chargingRateUnit"))
        cid = rpc.get(p, "connectorId", int, lo=0)
        dur = rpc.get(p, "duration", int, lo=1, hi=7 * 86400)
        unit = rpc.get(p, "chargingRateUnit", str, False, choices=("A", "W")) or "A"
        if cid > 1:
            return {"status": "Rejected"}
        now = int(self.link._now_s())
        pts = [0]
        for q in self.profiles:
            for t in self._breaks(q, now, now + dur):
                if 0 < t - now < dur and t - now not in pts:
                    pts.append(t - now)
        pts.sort()
        periods = []
        v, ph = self._grid()
        for off in pts:
            a = self.limit_at(now + off)
            lim = _NO_LIMIT if a is None else a
            if unit == "W":
                lim = lim * v * ph
            lim = int(lim * 10) / 10
            if not periods or periods[-1]["limit"] != lim:
                periods.append({"startPeriod": off, "limit": lim})
        from firmware.ocpp.link import iso
        return {"status": "Accepted", "connectorId": cid, "scheduleStart": iso(time.gmtime(now)),
                "chargingSchedule": {"duration": dur, "chargingRateUnit": unit,
                                     "chargingSchedulePeriod": periods}}

    # ---- evaluation ---------------------------------------------------------------
    def _grid(self):
        b = self.link.agent.board
        v = b.meter()[0] or 230
        return (v if v > 50 else 230), getattr(b, "phases", 1)

    def _origin(self, q, t):
        # schedule start for time t (None: not started)
        k = q["kind"]
        if k == "Relative":
            tx = self.link._tx
            return None if tx is None else tx.get("t0")
        s = q["start"]
        if k == "Recurring":
            per = 86400 if q["rec"] == "Daily" else 7 * 86400
            if t >= s:
                s += (t - s) // per * per
        return s

    def _breaks(self, q, a, b):
        out = []
        for t in (a, b):
            s = self._origin(q, t)
            if s is None:
                continue
            for sp in q["periods"]:
                out.append(s + sp[0])
            if q["dur"]:
                out.append(s + q["dur"])
        for t in (q["from"], q["to"]):
            if t is not None:
                out.append(t)
        return out

    def _value(self, q, t):
        if q["from"] is not None and t < q["from"] or q["to"] is not None and t >= q["to"]:
            return None
        s = self._origin(q, t)
        if s is None or t < s or q["dur"] and t >= s + q["dur"]:
            return None
        lim = None
        ph = None
        for sp in q["periods"]:
            if sp[0] <= t - s:
                lim = sp[1]
                ph = sp[2]
        if lim is None:
            return None
        if q["unit"] == "W":
            v, gph = self._grid()
            lim = lim / (v * (ph or gph))
        return lim

    def _best(self, purpose, t):
        best = None
        lv = -1
        tx = self.link._tx
        for q in self.profiles:
            if q["purpose"] != purpose or q["level"] <= lv:
                continue
            if purpose == "TxProfile" and (tx is None or q.get("ref") != tx["ref"]):
                continue
            a = self._value(q, t)
            if a is not None:
                best = a
                lv = q["level"]
        return best

    def limit_at(self, t):
        cpm = self._best("ChargePointMaxProfile", t)
        tx = self._best("TxProfile", t)
        if tx is None:
            tx = self._best("TxDefaultProfile", t)
        if cpm is None:
            return tx
        return cpm if tx is None or cpm < tx else tx

    def tx_ended(self, ref, tx=None):
        # ref None: every TxProfile but the running transaction's (tx)
        keep = [q for q in self.profiles if q["purpose"] != "TxProfile" or (
            q.get("ref") != ref if ref is not None else tx is not None and q.get("ref") == tx["ref"])]
        if len(keep) != len(self.profiles):
            self.profiles = keep
            self._save()

    def apply(self, now_s):
        """Once a second, and at once when a transaction starts: the limit now,
        to the charging core."""
        pd = self.pending
        tx = self.link._tx
        if pd is not None and tx is not None:
            self._begin_tx(pd, tx)
        if self._boot:
            self._boot = False
            self.tx_ended(None, tx)
        a = self.limit_at(int(now_s))
        if a is not None:
            a = min(80, max(0, int(a * 10) / 10))
        if a != self.limit_a:
            self.limit_a = a
            self.link.evse.set_limit(LIMIT, a)
