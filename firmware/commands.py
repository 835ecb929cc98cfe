# Backend commands (topic evse/<id>/cmd/<name>, JSON payload with an "id").
# Every command with a usable id gets exactly one reply dict:
#     {"id": <same>, "ok": true, ...}   or   {"id": <same>, "ok": false, "error": "..."}
# Without a usable id there is no reply (the command is still counted).
# A refused command changes nothing: every field is checked before anything
# is applied. Commands and error texts: docs/mqtt.md.
import sys
import json
from micropython import const

MAX_PAYLOAD = const(2048)
_MAX_ID_LEN = const(64)
_ID_LIMIT = 1 << 53
LIMIT_SOURCE = "remote"
RESET_TYPES = ("soft", "hard")


class Refused(Exception):
    pass


def config_module():
    """firmware.config and whether it was loaded before: the protected config
    store (~10 KB of heap as .mpy on a 32-bit port, ~15 KB on 64-bit) is read
    once at start (agent.load_config) and needed again only by get_config and
    set_config, so it is not kept loaded (docs/memory.md)."""
    had = "firmware.config" in sys.modules
    from firmware import config
    return config, had


def config_release(had):
    """Drop firmware.config again unless it was loaded before (by someone
    who keeps it: objects still referenced stay alive)."""
    if had:
        return
    sys.modules.pop("firmware.config", None)
    pkg = sys.modules.get("firmware")
    if pkg is not None and hasattr(pkg, "config"):
        delattr(pkg, "config")


def _scan_id(buf):
    # best effort: the "id" of a payload that is not valid JSON (or too big)
    i = buf.find(b'"id"')
    if i < 0:
        return None
    n = len(buf)
    i += 4
    while i < n and buf[i] in b" \t\r\n":
        i += 1
    if i >= n or buf[i] != 58:  # ':'
        return None
    i += 1
    while i < n and buf[i] in b" \t\r\n":
        i += 1
    if i < n and buf[i] == 34:  # '"'
        j = buf.find(b'"', i + 1)
        if j < 0 or j - i - 1 > _MAX_ID_LEN or j == i + 1:
            return None
        raw = bytes(buf[i + 1:j])
        if b"\\" in raw:
            return None
        try:
            return raw.decode()
        except UnicodeError:
            return None
    j = i + 1 if i < n and buf[i] == 45 else i  # '-'
    k = j
    while k < n and 48 <= buf[k] <= 57:
        k += 1
    if k == j or k - j > 15 or (k < n and buf[k] in b".eE"):
        return None
    return int(bytes(buf[i:k]))


def _valid_id(v):
    t = type(v)
    if t is str:
        return 0 < len(v) <= _MAX_ID_LEN
    return t is int and -_ID_LIMIT <= v <= _ID_LIMIT


def _num(msg, key, lo, hi, required=False, none=False):
    if key not in msg:
        if required:
            raise Refused("missing field: " + key)
        return None
    v = msg[key]
    if v is None and none:
        return None
    if type(v) not in (int, float) or v != v or v < lo or v > hi:
        raise Refused("%s must be a number %s..%s%s" % (key, lo, hi, " or null" if none else ""))
    return v


def _int(msg, key, lo, hi, required=False):
    if key not in msg:
        if required:
            raise Refused("missing field: " + key)
        return None
    v = msg[key]
    if type(v) is not int or v < lo or v > hi:
        raise Refused("%s must be an integer %d..%d" % (key, lo, hi))
    return v


def _str(msg, key, hi, required=False, none=False):
    if key not in msg:
        if required:
            raise Refused("missing field: " + key)
        return None
    v = msg[key]
    if v is None and none:
        return None
    if type(v) is not str or not v or len(v) > hi:
        raise Refused("%s must be a non-empty string of at most %d characters" % (key, hi))
    return v


def _only(msg, allowed):
    for k in msg:
        if k != "id" and k not in allowed:
            raise Refused("unknown field: %s" % (k,) if type(k) is str else "bad field name")


class Commands:
    def __init__(self, evse, updater=None, root="/", on_reset=None, config_changed=None):
        """on_reset(kind) is called at the end of handle(), after the reply
        for `reset` is built: it should schedule the reset (let the link
        flush the reply first), not reset on the spot. config_changed(cfg) is
        called after a successful set_config with the new configuration."""
        self.evse = evse
        self.updater = updater
        self.root = root
        self.on_reset = on_reset
        self.config_changed = config_changed
        self.handled = 0       # commands seen
        self.refused = 0       # commands refused
        self.unanswered = 0    # commands without a usable id (no reply)
        self.last_error = None
        self._after = None
        # set by firmware/lazy.py: update_firmware leaves its updater.start(req)
        # here (deferred) for the caller to run once this module is dropped
        # (the OTA chain then loads without the command handler beside it)
        self.defer = False
        self.deferred = None

    def handle(self, name, payload):
        """One command -> its reply dict, or None when it has no usable id."""
        self.handled += 1
        rid = None
        extra = None
        err = None
        self._after = None
        try:
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, (bytes, bytearray)):
                raise Refused("payload must be bytes")
            if len(payload) > MAX_PAYLOAD:
                rid = _scan_id(payload[:256])
                raise Refused("payload too large (%d bytes, max %d)" % (len(payload), MAX_PAYLOAD))
            try:
                msg = json.loads(payload)
            except Exception:   # ValueError, UnicodeError, MemoryError on deep nesting
                rid = _scan_id(payload)
                raise Refused("malformed JSON")
            if type(msg) is not dict:
                raise Refused("payload must be a JSON object")
            rid = msg.get("id")
            if not _valid_id(rid):
                rid = None
                raise Refused("missing or bad id (string of 1..64 characters or integer)")
            fn = _HANDLERS.get(name) if type(name) is str else None
            if fn is None:
                raise Refused("unknown command: %s" % (name,))
            extra = fn(self, msg)
        except Refused as e:
            err = e.args[0]
        except ValueError as e:   # refused by the charging core or the updater
            err = str(e) or "bad value"
        except Exception as e:  # noqa - a bug must not stop the agent: report it
            sys.print_exception(e)
            err = "internal error: %s" % type(e).__name__
        if err is not None:
            self.refused += 1
            self.last_error = err
            self._after = None
        after = self._after
        self._after = None
        if rid is None:
            self.unanswered += 1
            reply = None
        elif err is None:
            reply = {"id": rid, "ok": True}
            if extra:
                reply.update(extra)
        else:
            reply = {"id": rid, "ok": False, "error": err}
        if after is not None:
            try:
                after()
            except Exception as e:  # noqa - the reply stands; the hook's bug is reported
                sys.print_exception(e)
        return reply

    # ---- commands (each checks everything before changing anything) ------

    def _set_limit(self, msg):
        _only(msg, ("amps", "ttl"))
        if "amps" not in msg:
            raise Refused("missing field: amps")
        amps = _num(msg, "amps", 0, 80, none=True)
        ttl = _num(msg, "ttl", 1, 86400)
        ttl_ms = None if ttl is None else int(ttl * 1000)
        self.evse.set_limit(LIMIT_SOURCE, amps, ttl_ms)

    def _pause(self, msg):
        _only(msg, ())
        self.evse.pause()

    def _resume(self, msg):
        _only(msg, ())
        self.evse.resume()

    def _authorize(self, msg):
        _only(msg, ("tag",))
        self.evse.authorize(_str(msg, "tag", 64, none=True))

    def _stop_session(self, msg):
        _only(msg, ("reason",))
        reason = _str(msg, "reason", 32) or "remote"
        return {"stopped": bool(self.evse.stop_session(reason))}

    def _clear_faults(self, msg):
        _only(msg, ())
        # local=False: a remote clear never clears rcd_latched / relay_welded
        # (those need the installer's local reset); positional for recorders
        self.evse.clear_faults(False)

    def _update_firmware(self, msg):
        # OCPP 1.6 security extension SignedUpdateFirmware.req: requestId,
        # retries, retryInterval, firmware{location, retrieveDateTime,
        # installDateTime, signingCertificate, signature}; the firmware
        # fields may also be given at the top level.
        _only(msg, ("requestId", "retries", "retryInterval", "firmware") + _FW_FIELDS)
        fw = msg.get("firmware", {})
        if type(fw) is not dict:
            raise Refused("firmware must be an object")
        for k in fw:
            if k not in _FW_FIELDS:
                raise Refused("unknown field: firmware.%s" % (k,) if type(k) is str else "bad field name")
            if k in msg:
                raise Refused("%s given twice" % k)
        src = dict(msg)
        src.update(fw)
        req = {"requestId": _int(src, "requestId", 0, 2147483647, True),
               "location": _str(src, "location", 512, True),
               "retrieveDateTime": _str(src, "retrieveDateTime", 40, True)}
        for k in ("installDateTime",):
            v = _str(src, k, 40)
            if v is not None:
                req[k] = v
        for k, hi in (("retries", 100), ("retryInterval", 86400)):
            v = _int(src, k, 0, hi)
            if v is not None:
                req[k] = v
        for k in ("signingCertificate", "signature"):
            v = _str(src, k, 4096)
            if v is not None:
                req[k] = v
        if self.updater is None:
            raise Refused("firmware update not available")
        if self.defer:
            self.deferred = (self.updater.start, req)
            return
        self.updater.start(req)

    def _reset(self, msg):
        # refused while a session runs unless force: true; a forced reset ends
        # the session first (PWM off, contactor opened after the EV leaves C or
        # the C1 timeout, session record written: the agent's reset path)
        _only(msg, ("type", "force"))
        kind = _str(msg, "type", 8) or "soft"
        if kind not in RESET_TYPES:
            raise Refused("type must be one of: " + ", ".join(RESET_TYPES))
        force = msg.get("force", False)
        if force is not True and force is not False:
            raise Refused("force must be true or false")
        if self.evse.session is not None and not force:
            raise Refused("a charging session runs: stop it first, or send force: true")
        fn = self.on_reset
        if fn is None:
            raise Refused("reset not available")
        self._after = lambda: fn(kind)

    def _get_config(self, msg):
        _only(msg, ())
        config, had = config_module()
        try:
            return {"config": config.public(config.load(self.root))}
        finally:
            config_release(had)

    def _set_config(self, msg):
        # operator settings only: config.update() refuses installer settings
        # (config.INSTALLER) and turning require_auth off
        _only(msg, ("changes",))
        ch = msg.get("changes")
        if type(ch) is not dict:
            raise Refused("changes must be an object")
        config, had = config_module()
        try:
            err = config.update(self.root, ch)
            if err:
                raise Refused(err)
            fn = self.config_changed
            if fn is not None:
                cfg = config.load(self.root)
                self._after = lambda: fn(cfg)
        finally:
            config_release(had)


_FW_FIELDS = ("location", "retrieveDateTime", "installDateTime", "signingCertificate", "signature")

_HANDLERS = {
    "set_limit": Commands._set_limit,
    "pause": Commands._pause,
    "resume": Commands._resume,
    "authorize": Commands._authorize,
    "stop_session": Commands._stop_session,
    "clear_faults": Commands._clear_faults,
    "update_firmware": Commands._update_firmware,
    "reset": Commands._reset,
    "get_config": Commands._get_config,
    "set_config": Commands._set_config,
}
