# OCPP 1.6J charge point: the agent's second backend adapter (docs/ocpp.md).
#
# poll(now_ms) is called once per control period and does bounded work: it
# watches the charging core (sessions, status, meter), pumps the WebSocket
# (ws.py, non-blocking), answers the CSMS and sends at most one CALL at a
# time. Transaction messages (Start/Stop/MeterValues) are written to an
# append-only queue on flash before they are sent (the SessionLog format,
# under <root>/ocpp/sessions) and leave it only when the CSMS answered, so
# they survive a reboot while offline and are delivered in order. A
# transaction started offline gets its transactionId when its Start is
# answered; the (local ref -> transactionId) map is persisted before the
# Start leaves the queue, so a Start is never sent twice after a reboot.
import sys
import time
import json
import os
from micropython import const
from firmware.ocpp import rpc
from firmware.ocpp.ws import WS, WSError

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_RESP_MS = const(30000)          # no answer to a CALL within this: timeout
_BOOT_RETRY_S = const(60)        # boot retry when the CSMS gives interval 0
_Q_MAX = const(8)                # non-transaction messages waiting (RAM)
_TXQ_MAX = const(200)            # transaction messages on flash
_IDS_KEEP = const(8)
_IN_MAX = const(2048)            # largest CSMS message kept (a bigger one is discarded)
_VENDOR = "evse-agent"
_MODEL = "evse-mp"
LIMIT_AVAIL = "ocpp_avail"      # limit source holding the offer at 0 while Inoperative

STATES = ("offline", "connecting", "booting", "pending", "rejected", "accepted")

# our fault codes -> ChargePointErrorCode
_ERRCODE = {"relay_welded": "PowerSwitchFailure", "relay_stuck_open": "PowerSwitchFailure",
            "rcd_latched": "GroundFailure", "rcd_trip": "GroundFailure",
            "cp_error": "EVCommunicationError", "diode_missing": "EVCommunicationError",
            "over_temperature": "HighTemperature"}
# our session end reasons -> StopTransaction reason
_REASON = {"ev_disconnected": "EVDisconnected", "remote": "Remote", "local": "Local",
           "relay_welded": "EmergencyStop", "rcd_latched": "EmergencyStop"}
_REASONS = ("DeAuthorized", "EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other",
            "PowerLoss", "Reboot", "Remote", "SoftReset", "UnlockCommand")
# update job status (security names) -> OCPP 1.6 core FirmwareStatus
_FW_CORE = {"Idle": "Idle", "Downloading": "Downloading", "Downloaded": "Downloaded",
            "DownloadFailed": "DownloadFailed", "Installing": "Installing", "Installed": "Installed",
            "InstallationFailed": "InstallationFailed", "InvalidSignature": "InstallationFailed",
            "InstallVerificationFailed": "InstallationFailed"}
MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
               "Voltage")
_UNITS = ("Wh", "W", "A", "V")

# configuration keys: name -> (kind, read-only, default); kinds: i int >= 0, b bool,
# m measurand list (CSL)
KEYS = {
    "HeartbeatInterval": ("i", False, 300),
    "ConnectionTimeOut": ("i", False, 120),
    "MeterValueSampleInterval": ("i", False, 60),
    "MeterValuesSampledData": ("m", False, "Energy.Active.Import.Register,Power.Active.Import"),
    "ClockAlignedDataInterval": ("i", False, 0),
    "MeterValuesAlignedData": ("m", False, "Energy.Active.Import.Register"),
    "OfflineFallbackTimeout": ("i", False, 0),
    "TransactionMessageAttempts": ("i", False, 3),
    "TransactionMessageRetryInterval": ("i", False, 60),
    "WebSocketPingInterval": ("i", False, 60),
    "AuthorizeRemoteTxRequests": ("b", False, False),
    "StopTransactionOnInvalidId": ("b", False, True),
    "StopTransactionOnEVSideDisconnect": ("b", True, True),
    "UnlockConnectorOnEVSideDisconnect": ("b", True, False),
    "NumberOfConnectors": ("i", True, 1),
    "SupportedFeatureProfiles": ("s", True, "Core,RemoteTrigger,SmartCharging,FirmwareManagement"),
    "GetConfigurationMaxKeys": ("i", True, 32),
    "ChargeProfileMaxStackLevel": ("i", True, 8),
    "ChargingScheduleAllowedChargingRateUnit": ("s", True, "Current,Power"),
    "ChargingScheduleMaxPeriods": ("i", True, 24),
    "MaxChargingProfilesInstalled": ("i", True, 8),
    # security whitepaper ed. 3 (sec.py): profile from ocpp.url/auth_key, 4 roots of each kind
    "SecurityProfile": ("i", True, 0),
    "CertificateStoreMaxLength": ("i", True, 8),
    "AdditionalRootCertificateCheck": ("b", True, False),
}


# the CALLs the CSMS may send (firmware/ocpp/handlers.py, one function each)
ACTIONS = ("RemoteStartTransaction", "RemoteStopTransaction", "Reset", "ChangeAvailability",
           "UnlockConnector", "GetConfiguration", "ChangeConfiguration", "TriggerMessage",
           "DataTransfer", "SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule",
           "UpdateFirmware", "SignedUpdateFirmware", "ExtendedTriggerMessage")


def _drop(name):
    # forget a module loaded for one use (sys.modules and its package attribute)
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    m = sys.modules.get(pkg)
    if m is not None and attr in m.__dict__:
        delattr(m, attr)


def iso(t):
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % t[:6]


def parse_iso(s):
    # 'YYYY-MM-DDTHH:MM:SS[.fff][Z|+00:00]' -> time tuple for mktime, or None
    try:
        return (int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]), int(s[14:16]),
                int(s[17:19]), 0, 0)
    except (ValueError, IndexError, TypeError):
        return None


def join(root, name):
    return root.rstrip("/") + "/" + name


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
        return d if type(d) is dict else None
    except (OSError, ValueError):
        return None


def _rand():
    import random
    return random.getrandbits(16) / 65536


class Link:
    """The charge point. `agent` gives evse, board, cmd, bootinfo and
    _on_reset(kind); cfg is the configuration's `ocpp` section."""

    def __init__(self, cfg, device_id, agent, root, now_ms, rand=None, wall=None):
        self.cfg = cfg
        self.agent = agent
        self.evse = agent.evse
        self.root = root
        self.cbid = cfg.get("charge_box_id") or device_id
        self.url = cfg["url"]
        self.connected = False        # WebSocket open
        self.registration = None      # None, "Pending", "Rejected", "Accepted"
        self.last_error = None
        self.attempts = 0
        self.failures = 0
        self.backoff_ms = 0
        self.retry_at = now_ms
        self.timeouts = 0             # CALLs that got no answer in time
        self.tx_dropped = 0           # transaction messages given up
        self.received = 0
        self._rand = rand or _rand
        self._wall = wall or time.time
        self._clock_off = 0
        import gc
        gc.collect()                  # the receive buffer is one contiguous block
        self._ws = WS(_IN_MAX)
        self._auth = None
        k = cfg.get("auth_key")
        if k:
            self._auth = ("%s:%s" % (self.cbid, k)).encode()
        self._ca = None
        self._q = []                  # [action, payload, kind, data]
        self._wait = None             # outstanding CALL: [uid, action, kind, data, t_sent]
        self._boot_at = now_ms
        self._hb_at = None
        self._tx_retry_at = None
        self._tx_attempts = 0
        self._pinged = None
        self._t_call = now_ms         # last CALL sent
        self._st_sent = [None, None]  # (status, error) last queued per connector
        self._status = ["Available", "NoError", None]
        self._finishing = False
        self._was_active = False
        self._sample_at = None
        self._align_at = None
        self._reset_kind = None
        self.smart = None             # smart.Smart once a charging profile exists
        self._smart_s = None
        d = join(root, "ocpp")
        try:
            os.mkdir(d)
        except OSError:
            pass
        self._dir = d
        from firmware.sessionlog import SessionLog
        self.txq = SessionLog(d, _TXQ_MAX)
        self.conf = {}
        stored = _read_json(join(d, "conf.json")) or {}
        for k2 in KEYS:
            self.conf[k2] = stored.get(k2, KEYS[k2][2])
        st = _read_json(join(d, "state.json")) or {}
        self._ids = st.get("ids") or []          # [[ref, transactionId], ...]
        self._tx = st.get("open")                # running transaction: {"ref", "m0", "m", "tag"}
        self.inoperative = bool(st.get("inop"))
        self._inop_pending = None
        self._fw = st.get("fw")                  # {"rid": n, "signed": bool}: the last update request
        self.fw_status = "Idle"
        if self.inoperative:
            self.evse.set_limit(LIMIT_AVAIL, 0)
        # security events: a queue on flash of its own (events.py, loaded per use)
        self._sec = []
        try:
            os.stat(join(d, "secq.json"))
            self._ev("load")
        except OSError:
            pass
        self._boot_ev = st.get("why") or ""   # after this boot: "" StartupOfTheDevice, else ResetOrReboot
        self._fail_kind = None        # the failure kind last reported (once per streak)
        self.conf["SecurityProfile"] = (2 if self.url.startswith("wss://") else 1) if self._auth else 0
        try:
            os.stat(join(d, "profiles.json"))
            self.smart_on()
        except OSError:
            pass
        self.quiet = bool(st.get("quiet"))       # the CSMS unheard for OfflineFallbackTimeout
        self._qt = None                          # quiet.py while that key is set
        self._alive(now_ms, True)
        if self._tx is not None:
            # the board restarted during a transaction: close it as it was
            self._queue_stop(self._tx, st.get("why") or "PowerLoss", self._tx.get("m", self._tx["m0"]))
            self._tx = None
            self._save_state()

    # ---- public ------------------------------------------------------------
    @property
    def state(self):
        if not self.connected:
            return "connecting" if self._ws.state_id else "offline"
        r = self.registration
        if r is None:
            return "booting"
        return {"Pending": "pending", "Rejected": "rejected"}.get(r, "accepted")

    def pending(self):
        """Bytes or answers not yet out (0 = flushed)."""
        if self.registration != "Accepted":
            return self._ws.pending()
        return self._ws.pending() + len(self._q) + (0 if self._wait is None else 1)

    def present_tag(self, tag):
        """A local idTag (RFID): Authorize.req; charging on Accepted."""
        if type(tag) is not str or not 0 < len(tag) <= 20:
            raise ValueError("idTag must be 1..20 characters")
        self._enqueue("Authorize", {"idTag": tag}, "auth", tag)

    def session_ended(self, rec):
        """From the agent: a finished session record (Evse.pop_finished())."""
        tx = self._tx
        if tx is None or tx.get("sid") != rec.get("id"):
            return
        self._end_tx(rec.get("reason"), rec.get("energy_wh"))

    def close(self, now_ms=None):
        self._ws.close(1000)
        self.connected = False

    def poll(self, now_ms):
        try:
            self._observe(now_ms)
            if self._qt is not None:
                self._qt.watch(self, now_ms)
            self._link(now_ms)
        except WSError as e:
            k = self._ws.fail
            self._ws.fail = None
            self._drop(now_ms, str(e), k)
        except MemoryError:
            self._drop(now_ms, "out of memory", "memory")
        except OSError as e:
            self._drop(now_ms, "OSError %s" % (e.args[0] if e.args else ""))

    def smart_on(self):
        if self.smart is None:
            from firmware.ocpp.smart import Smart
            self.smart = Smart(self)
            self._smart_s = None
        return self.smart

    def _alive(self, now, boot=False):
        # a message from the CSMS (or the boot): OfflineFallbackTimeout, quiet.py
        self._heard = now
        q = self._qt
        if q is None and (self.quiet or self.conf["OfflineFallbackTimeout"]):
            from firmware.ocpp import quiet as q
            self._qt = q
        if q is not None and not q.alive(self, now, boot):
            self._qt = None
            _drop("firmware.ocpp.quiet")

    # ---- the charging core, watched ------------------------------------------
    def _observe(self, now):
        a = self.agent
        c = a.cmd
        if c is None:
            return
        ev = self.evse
        active = c.session_active
        if active and not self._was_active and self._tx is None:
            self._begin_tx(now)
        self._was_active = active
        if c.state == "A":
            self._finishing = False
        if self._inop_pending is not None and not active:
            self._set_avail(self._inop_pending)
        tx = self._tx
        if tx is not None:
            iv = self.conf["MeterValueSampleInterval"]
            if iv and self._sample_at is not None and time.ticks_diff(now, self._sample_at) >= 0:
                self._sample_at = time.ticks_add(now, iv * 1000)
                self._meter_values("Sample.Periodic", self.conf["MeterValuesSampledData"], tx)
        al = self.conf["ClockAlignedDataInterval"]
        if al:
            t = int(self._now_s())
            slot = t - t % al
            if self._align_at is None:
                self._align_at = slot
            elif slot != self._align_at:
                self._align_at = slot
                self._meter_values("Sample.Clock", self.conf["MeterValuesAlignedData"], tx)
        sm = self.smart
        if sm is not None:
            t = int(self._now_s())
            if t != self._smart_s:
                self._smart_s = t
                sm.apply(t)
        # connector 1 status
        s = self._status
        f = c.fault
        err = "NoError"
        vend = None
        if f is not None:
            st = "Faulted"
            err = _ERRCODE.get(f, "OtherError")
            vend = f
        elif self.inoperative and self._tx is None:
            st = "Unavailable"
        elif c.state == "A":
            st = "Available"
        elif active:
            if c.relay:
                st = "Charging"
            elif c.current_a >= 6 and not ev.paused:
                st = "SuspendedEV"
            else:
                st = "SuspendedEVSE"
        elif self._finishing:
            st = "Finishing"
        else:
            st = "Preparing"
        if st != s[0] or err != s[1]:
            s[0] = st
            s[1] = err
            s[2] = vend

    def _now_s(self):
        return self._wall() + self._clock_off

    def _ts(self):
        return iso(time.gmtime(int(self._now_s())))

    def _meter(self):
        v, i, e = self.agent.board.meter()
        ph = getattr(self.agent.board, "phases", 1)
        return v, i, e, ph

    def _begin_tx(self, now):
        sess = self.evse.session
        if sess is None or self.inoperative:
            return
        e = self._meter()[2]
        m0 = int(e)
        tag = sess.get("tag") or self.cfg.get("id_tag") or "local"
        ref = self.txq.append({"a": "StartTransaction", "p": {
            "connectorId": 1, "idTag": tag[:20], "meterStart": m0, "timestamp": self._ts()}})
        self._tx = {"ref": ref, "m0": m0, "m": m0, "tag": tag[:20], "sid": sess.get("id"),
                    "t0": int(self._now_s())}
        self._smart_s = None
        self._save_state()
        iv = self.conf["MeterValueSampleInterval"]
        self._sample_at = time.ticks_add(now, iv * 1000) if iv else None

    def _end_tx(self, reason, energy_wh):
        tx = self._tx
        if tx is None:
            return
        r = _REASON.get(reason, reason if reason in _REASONS else "Other")
        m = tx["m0"] + int(energy_wh or 0)
        self._queue_stop(tx, r, m)
        self._tx = None
        if self.smart is not None:
            self.smart.tx_ended(tx["ref"])
            self._smart_s = None
        self._finishing = True
        self._save_state()

    def _queue_stop(self, tx, reason, meter):
        p = {"meterStop": int(meter), "timestamp": self._ts(), "reason": reason}
        if tx.get("tag"):
            p["idTag"] = tx["tag"]
        self.txq.append({"a": "StopTransaction", "r": tx["ref"], "p": p})

    def _meter_values(self, context, measurands, tx):
        v, i, e, ph = self._meter()
        vals = {"Energy.Active.Import.Register": str(int(e)),
                "Power.Active.Import": str(int(v * i * ph)),
                "Current.Import": "%.1f" % i, "Voltage": "%.1f" % v}
        sv = []
        for m in measurands.split(","):
            if m in vals:
                sv.append({"value": vals[m], "context": context, "measurand": m,
                           "unit": _UNITS[MEASURANDS.index(m)]})
        if not sv:
            return
        p = {"connectorId": 1, "meterValue": [{"timestamp": self._ts(), "sampledValue": sv}]}
        if tx is not None:
            tx["m"] = int(e) if int(e) >= tx["m0"] else tx["m0"]
            self._save_state()
            self.txq.append({"a": "MeterValues", "r": tx["ref"], "p": p})
        else:
            self._enqueue("MeterValues", p, "q", None)

    # ---- firmware --------------------------------------------------------------
    def start_update(self, req, signed):
        u = self.agent.updater
        if u is None:
            raise rpc.CallError(rpc.NOT_SUPPORTED, "no update job in this build")
        fw = self._fw or {}
        rid = req.get("requestId")
        if rid is None:
            rid = (fw.get("rid") or 0) + 1
            req["requestId"] = rid
        try:
            r = u.start(req)
        except ValueError as e:     # updater.UpdateError: malformed or busy, nothing changed
            raise rpc.CallError(rpc.PROPERTY if "busy" not in str(e) else rpc.GENERIC, str(e))
        self._fw = {"rid": rid, "signed": signed}
        self._save_state()
        return r

    def firmware_status(self, status, rid=None, force=False, why=None):
        """From the update job (the OCPP 1.6 security names): FirmwareStatus-
        Notification with the core names for UpdateFirmware requests. A
        signed update's InvalidSignature (the file's or the image's) also
        raises SecurityEventNotification InvalidFirmwareSignature."""
        fw = self._fw or {}
        if fw.get("signed"):
            if status == self.fw_status and not force:
                return
            self.fw_status = status
            p = {"status": status, "requestId": fw.get("rid") if rid is None else rid}
            self._enqueue("SignedFirmwareStatusNotification", p, "q", None)
            if status == "InvalidSignature" and not force:
                self.security_event("InvalidFirmwareSignature", why)
            return
        st = _FW_CORE.get(status)
        if st is None and not force:
            return
        st = st or "Idle"
        if st == self.fw_status and not force:
            return
        self.fw_status = st
        self._enqueue("FirmwareStatusNotification", {"status": st}, "q", None)

    def security_event(self, kind, info=None):
        """SecurityEventNotification, queued on flash until the CSMS answered it
        (firmware/ocpp/events.py)."""
        self._ev("add", kind, info)

    def _ev(self, fn, *a):
        try:
            from firmware.ocpp import events
            getattr(events, fn)(self, *a)
            return True
        except MemoryError:
            print("ocpp: security event %s not recorded (out of memory)" % fn)
        finally:
            events = None
            _drop("firmware.ocpp.events")

    def _save_state(self):
        st = {"ids": self._ids, "open": self._tx, "inop": self.inoperative, "fw": self._fw}
        if self.quiet:
            st["quiet"] = True
        if self._reset_kind:
            st["why"] = self._reset_kind
        write_json(join(self._dir, "state.json"), st)

    # ---- the connection ---------------------------------------------------------------
    def _link(self, now):
        ws = self._ws
        if ws.state_id == 0:
            if time.ticks_diff(now, self.retry_at) >= 0:
                self._open(now)
            return
        msg = ws.poll(now)
        if ws.is_open and not self.connected:
            self._connected(now)
        if msg is not None:
            self.received += 1
            self._incoming(now, msg)
        if not self.connected:
            return
        w = self._wait
        if w is not None and time.ticks_diff(now, w[4]) >= _RESP_MS:
            self._wait = None
            self.timeouts += 1
            self._failed(now, w, "timeout")
        self._keepalive(now)
        if self._wait is None and ws.pending() < 1024:
            self._send_next(now)

    def _open(self, now):
        self.attempts += 1
        url = self.url
        ca = None
        if url.startswith("wss://"):
            # trust anchors: the installer's ocpp.ca and the CentralSystemRootCertificates
            # installed over OCPP (read at every connection: a new one counts from the next)
            if self._ca is None and self.cfg.get("ca"):
                from firmware.mqtt import pem_to_der
                with open(self.cfg["ca"], "rb") as f:
                    self._ca = pem_to_der(f.read())
            from firmware.ocpp import certstore
            ca = certstore.load(self._dir, "CentralSystemRootCertificate")
            if self._ca:
                ca.append(self._ca)
        self._ws.open(url, "/" + self.cbid, now, "ocpp1.6", self._auth, ca)

    def _connected(self, now):
        self.connected = True
        self.failures = 0
        self._fail_kind = None
        self.last_error = None
        self._pinged = None
        self._st_sent = [None, None]   # the current status goes out again
        if self.registration != "Accepted":
            self._boot_at = now
        print("ocpp: connected to %s as %s" % (self.url, self.cbid))

    def _drop(self, now, why, kind=None):
        self.last_error = why
        if kind and kind != self._fail_kind and self._ev("add", kind, why):
            self._fail_kind = kind      # once per failure streak (or connection)
        if self.connected or self.failures < 3:
            print("ocpp: link down: %s" % why)
        self._ws.close()
        self.connected = False
        w = self._wait
        self._wait = None
        if w is not None and w[2] == "q" and w[1] != "Heartbeat":
            self._q.insert(0, w[:4])
        self.failures += 1
        d = _BACKOFF_MIN_MS << min(self.failures - 1, 6)
        if d > _BACKOFF_MAX_MS:
            d = _BACKOFF_MAX_MS
        d = d // 2 + int(self._rand() * (d // 2))   # jitter: [d/2, d)
        if d < _BACKOFF_MIN_MS:
            d = _BACKOFF_MIN_MS
        self.backoff_ms = d
        self.retry_at = time.ticks_add(now, d)

    def _keepalive(self, now):
        iv = self.conf["WebSocketPingInterval"]
        ws = self._ws
        if iv:
            rx = ws.rx_ms if ws.rx_ms is not None else now
            if self._pinged is not None:
                if time.ticks_diff(rx, self._pinged) >= 0:
                    self._pinged = None
                elif time.ticks_diff(now, self._pinged) >= max(iv * 500, 5000):
                    raise WSError("no answer to a WebSocket ping")
            elif time.ticks_diff(now, rx) >= iv * 1000:
                ws.ping()
                self._pinged = now
        if self.registration == "Accepted" and self._hb_at is not None and \
                time.ticks_diff(now, self._hb_at) >= 0:
            self._hb_at = None
            self._enqueue("Heartbeat", {}, "q", None)

    def _enqueue(self, action, payload, kind, data):
        q = self._q
        if len(q) >= _Q_MAX:
            q.pop(0)
        q.append([action, payload, kind, data])

    def _send_next(self, now):
        reg = self.registration
        if reg != "Accepted":
            if time.ticks_diff(now, self._boot_at) >= 0:
                self._boot_at = time.ticks_add(now, _RESP_MS)
                bi = self.agent.bootinfo
                from firmware.report import version_str
                p = {"chargePointVendor": _VENDOR, "chargePointModel": _MODEL,
                     "chargePointSerialNumber": self.cbid[:25],
                     "firmwareVersion": version_str(bi.get("version")) or "0.0.0"}
                self._call(now, "BootNotification", p, "boot", None)
            return
        for cid in (0, 1):
            s = self._conn_status(cid)
            if self._st_sent[cid] != s:
                self._st_sent[cid] = s
                p = {"connectorId": cid, "status": s[0], "errorCode": s[1], "timestamp": self._ts()}
                if s[2]:
                    p["vendorErrorCode"] = s[2]
                self._call(now, "StatusNotification", p, "st", None)
                return
        if self._sec:
            self._call(now, "SecurityEventNotification", self._sec[0], "sec", self._sec[0])
            return
        if self._q:
            it = self._q.pop(0)
            self._call(now, it[0], it[1], it[2], it[3])
            return
        self._send_tx(now)

    def _conn_status(self, cid):
        if cid == 1:
            s = self._status
            return (s[0], s[1], s[2])
        return ("Unavailable" if self.inoperative else "Available", "NoError", None)

    def _send_tx(self, now):
        if self._tx_retry_at is not None and time.ticks_diff(now, self._tx_retry_at) < 0:
            return
        q = self.txq
        while len(q):
            head = q.peek()
            if head is None:
                return
            seq = head["seq"]
            a = head.get("a")
            p = head.get("p")
            if a == "StartTransaction":
                if self._id_of(seq) is not None:
                    q.ack(seq)     # answered before a reboot: never sent twice
                    continue
            elif a in ("StopTransaction", "MeterValues"):
                tid = self._id_of(head.get("r"))
                if tid is None:
                    q.ack(seq)     # its Start was refused or given up: the CSMS has no such transaction
                    self.tx_dropped += 1
                    continue
                p["transactionId"] = tid
            else:
                q.ack(seq)
                continue
            self._call(now, a, p, "tx", seq)
            return

    def _id_of(self, ref):
        for r, tid in self._ids:
            if r == ref:
                return tid
        return None

    def _call(self, now, action, payload, kind, data):
        uid = rpc.new_id()
        self._ws.send(rpc.call(uid, action, payload))
        self._wait = [uid, action, kind, data, now]
        self._t_call = now
        if self.registration == "Accepted":
            self._hb_at = time.ticks_add(now, self.conf["HeartbeatInterval"] * 1000) \
                if self.conf["HeartbeatInterval"] else None

    # ---- answers to our CALLs ------------------------------------------------------
    def _incoming(self, now, raw):
        try:
            t, uid, a, b = rpc.decode(raw)
        except rpc.CallError as e:
            print("ocpp: unreadable message dropped: %s" % e.desc)
            return
        if t == rpc.CALL:
            self._handle_call(now, uid, a, b)
            self._alive(now)     # after the answer: a ChangeConfiguration of the timeout applies
            return
        self._alive(now)
        w = self._wait
        if w is None or w[0] != uid:
            return    # late answer to a CALL given up on
        self._wait = None
        if t == rpc.ERROR:
            print("ocpp: %s answered with CALLERROR %s %s" % (w[1], a, b))
            self._failed(now, w, a)
            return
        if a is None:
            self._failed(now, w, "bad CALLRESULT payload")
            return
        try:
            self._result(now, w, a)
        except (KeyError, TypeError, ValueError) as e:
            print("ocpp: bad %s answer: %r" % (w[1], e))
            self._failed(now, w, "bad answer")

    def _failed(self, now, w, why):
        kind = w[2]
        if kind == "sec" and why != "timeout":
            self._ev("done", w[3])  # a CALLERROR: the CSMS had it and will not take it
        elif kind == "boot":
            self._boot_at = time.ticks_add(now, 10000)
        elif kind == "tx":
            self._tx_attempts += 1
            if self._tx_attempts >= max(1, self.conf["TransactionMessageAttempts"]):
                self.tx_dropped += 1
                self._tx_attempts = 0
                self._tx_retry_at = None
                self.txq.ack(w[3])
                print("ocpp: transaction message %s given up (%s)" % (w[1], why))
            else:
                self._tx_retry_at = time.ticks_add(
                    now, self.conf["TransactionMessageRetryInterval"] * 1000 * self._tx_attempts)

    def _result(self, now, w, p):
        action = w[1]
        if action == "BootNotification":
            st = p["status"]
            iv = p["interval"]
            if type(iv) is not int or st not in ("Accepted", "Pending", "Rejected"):
                raise ValueError("bad BootNotification answer")
            self._set_clock(p.get("currentTime"))
            self.registration = st
            if st == "Accepted":
                if iv > 0:
                    self.conf["HeartbeatInterval"] = iv
                self._hb_at = time.ticks_add(now, self.conf["HeartbeatInterval"] * 1000)
                self._st_sent = [None, None]
                print("ocpp: boot accepted, heartbeat %d s" % self.conf["HeartbeatInterval"])
            else:
                self._boot_at = time.ticks_add(now, (iv if iv > 0 else _BOOT_RETRY_S) * 1000)
            if st == "Accepted" and self._boot_ev is not None:
                self._ev("boot")        # once per boot
        elif action == "Heartbeat":
            self._set_clock(p.get("currentTime"))
        elif w[2] == "sec":
            self._ev("done", w[3])
        elif action == "Authorize":
            if p["idTagInfo"]["status"] == "Accepted":
                self.evse.authorize(w[3])
        elif w[2] == "tx":
            self._tx_attempts = 0
            self._tx_retry_at = None
            seq = w[3]
            if action == "StartTransaction":
                tid = p["transactionId"]
                if type(tid) is not int:
                    raise ValueError("transactionId must be an integer")
                ids = self._ids
                ids.append([seq, tid])
                if len(ids) > _IDS_KEEP:
                    ids.pop(0)
                self._save_state()       # before the ack: no second Start after a reboot
                self.txq.ack(seq)
                tx = self._tx
                if p["idTagInfo"]["status"] != "Accepted" and tx is not None and tx["ref"] == seq \
                        and self.conf["StopTransactionOnInvalidId"]:
                    self.evse.stop_session("DeAuthorized")
            else:
                self.txq.ack(seq)

    def _set_clock(self, s):
        if type(s) is not str or time.gmtime(0)[0] == 1970:
            return    # the port's own clock is UNIX time: keep it
        t = parse_iso(s)
        if t is not None:
            self._clock_off = time.mktime(t) - self._wall()

    # ---- CALLs from the CSMS -------------------------------------------------------
    def _handle_call(self, now, uid, action, p):
        ws = self._ws
        if isinstance(p, rpc.CallError):
            ws.send(rpc.error(uid, p.code, p.desc))
            return
        # any other action: the certificate CALLs of sec.py (sec.ACTIONS), else NotImplemented
        sec = action not in ACTIONS
        name = "firmware.ocpp." + ("sec" if sec else "signedfw" if action == "SignedUpdateFirmware"
                                   else "handlers")
        after = None
        try:
            # handlers.py (sec.py) only while a CSMS call is answered (they are
            # rare): its bytecode is not kept in the heap between calls
            # (SignedUpdateFirmware: signedfw.py instead of handlers.py, for its heap peak)
            m = __import__(name, None, None, ("x",))
            try:
                if sec and action not in m.ACTIONS:
                    raise rpc.CallError(rpc.NOT_IMPLEMENTED, "%s is not implemented" % action)
                r = getattr(m, action)(self, p)
            finally:
                m = None
                _drop(name)
            if type(r) is tuple:
                r, after = r
            out = rpc.result(uid, r)
        except rpc.CallError as e:
            out = rpc.error(uid, e.code, e.desc)
        except Exception as e:
            sys.print_exception(e)
            out = rpc.error(uid, rpc.INTERNAL, "%s" % type(e).__name__)
        ws.send(out)
        if after is not None:
            after()

    def _set_avail(self, inop):
        self._inop_pending = None
        self.inoperative = inop
        self.evse.set_limit(LIMIT_AVAIL, 0 if inop else None)
        self._save_state()
