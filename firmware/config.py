# Device configuration, protected on flash like the boot record (docs/security.md).
#
# Two copies, /config.json and /config.bak. Each is a JSON object whose last
# two members are the sequence number and a CRC-32 of every byte before the
# checksum member:
#     {"device_id": "cp-7", ..., "_seq": 12, "_crc": "89abcdef"}
# so the file stays readable JSON (CONTRACT: /config.json section `ocpp`). A
# write goes to config.bak first, then config.json, each through a temporary
# file that is read back before it is renamed over the copy (atomic on
# LittleFS). load() takes the valid copy with the newest sequence number
# (serial arithmetic mod 2**30; a tie goes to config.json).
#
# Fail closed: with no valid copy (missing, empty, torn, a flipped bit, a bad
# value) load() returns the fail-safe configuration: 0 A, authorization required, no broker, no
# device id, and `fault` (also in the returned dict) says why. It never falls
# back to the built-in template. A legacy plain /config.json (no checksum,
# written by older deploys) is accepted once when it is strictly valid and no
# config.bak exists; it is rewritten protected at once.
#
# Installer settings (INSTALLER: rating, ventilation, board, device id, broker,
# credentials, CA, health thresholds, OCPP endpoint) are written only by the
# installer: evsectl deploy / provision, or install()/update(installer=True)
# from the service console. A remote update() may change operator settings
# only, and may turn require_auth on but never off.
import os
import json
from micropython import const

from binascii import crc32

FILE = "config.json"
COPY = "config.bak"
BOARDS = ("sim", "esp32", "rp2")
REDACTED = "***"
INSTALLER = ("device_id", "board", "max_current_a", "ventilation", "mqtt", "health", "ocpp")
OPERATOR = ("fallback_current_a", "require_auth", "telemetry_ms", "install_window", "ha_discovery")
REQUIRED = ("device_id", "board", "max_current_a")   # a stored config must name these
_MAX_FILE = const(4096)
_SEQ_MASK = const(0x3FFFFFFF)
_TAIL = const(19)                                    # len(',"_crc":"xxxxxxxx"}')

# The template an installer starts from (deploy, provision, install()). It is
# never used in place of a stored configuration.
DEFAULTS = {
    "device_id": "evse-0001",
    "board": "sim",
    "max_current_a": 32,
    "fallback_current_a": 6,
    "ventilation": False,
    "require_auth": False,
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "user": None,
        "password": None,
        "tls": False,
        "ca": None,           # path of the CA certificate (PEM or DER) for TLS
        "keepalive": 60,      # s
        "client_id": None,    # None: device_id
    },
    "ocpp": {
        "url": None,          # ws:// or wss:// CSMS address; None: no OCPP link (docs/ocpp.md)
        "charge_box_id": None,  # None: device_id; the board connects to <url>/<charge_box_id>
        "auth_key": None,     # HTTP Basic password (security profile 1/2)
        "ca": None,           # path of the CSMS CA certificate (PEM or DER) for wss://
        "signed_updates_only": False,  # True: UpdateFirmware refused, SignedUpdateFirmware only
    },
    "telemetry_ms": 10000,
    "ha_discovery": True,     # Home Assistant MQTT discovery configs (firmware/hadisco.py)
    "install_window": None,   # [start_min, end_min] local time, may wrap midnight; None: any time
    "health": {
        "trial_s": 120,       # a trial boot must stay healthy this long before confirming
        "need_mqtt": True,    # ... and must have reached the broker
        "max_loop_ms": 50,    # worst control period tolerated during the trial
    },
}

# What load() returns without a valid configuration: no current, nobody
# charges without authorization, no broker, no board/device identity.
_FAILSAFE = {"device_id": None, "board": None, "max_current_a": 0, "fallback_current_a": 0,
             "ventilation": False, "require_auth": True}

last_error = None   # a problem found by the last load()/update() (also when a copy was used)
fault = None        # why the last load() returned the fail-safe configuration, else None


def _path(root, name):
    return root.rstrip("/") + "/" + name


def _copy(d):
    return {k: (_copy(v) if type(v) is dict else (list(v) if type(v) is list else v))
            for k, v in d.items()}


def _int(v, lo, hi):
    if type(v) is not int or v < lo or v > hi:
        return "must be an integer %d..%d" % (lo, hi)


def _num(v, lo, hi):
    if type(v) not in (int, float) or v != v or v < lo or v > hi:
        return "must be a number %s..%s" % (lo, hi)


def _bool(v):
    if type(v) is not bool:
        return "must be true or false"


def _str(v, lo, hi, none=False, safe=False):
    if v is None and none:
        return None
    if type(v) is not str or not lo <= len(v) <= hi:
        return "must be a string of %d..%d characters%s" % (lo, hi, " or null" if none else "")
    if safe:
        for ch in v:
            if not (ch.isalpha() or ch.isdigit() or ch in "-_.") or ord(ch) > 127:
                return "may only hold letters, digits, '-', '_' and '.'"


def _window(v):
    if v is None:
        return None
    if type(v) is not list or len(v) != 2 or any(type(x) is not int or x < 0 or x > 1439 for x in v):
        return "must be null or [start_min, end_min] with minutes 0..1439"


_CHECKS = {
    "device_id": lambda v: _str(v, 1, 32, safe=True),
    "board": lambda v: None if v in BOARDS else "must be one of " + ", ".join(BOARDS),
    "max_current_a": lambda v: _num(v, 6, 80),
    "fallback_current_a": lambda v: _num(v, 0, 80),
    "ventilation": _bool,
    "require_auth": _bool,
    "telemetry_ms": lambda v: _int(v, 1000, 3600000),
    "ha_discovery": _bool,
    "install_window": _window,
}
_MQTT = {
    "host": lambda v: _str(v, 0, 253),   # "" = no MQTT link
    "port": lambda v: _int(v, 1, 65535),
    "user": lambda v: _str(v, 1, 64, none=True),
    "password": lambda v: _str(v, 1, 128, none=True),
    "tls": _bool,
    "ca": lambda v: _str(v, 1, 128, none=True),
    "cert": lambda v: _str(v, 1, 128, none=True),   # client certificate (PEM or DER), optional
    "key": lambda v: _str(v, 1, 128, none=True),    # its private key (DER or PEM)
    "keepalive": lambda v: _int(v, 10, 3600),
    "client_id": lambda v: _str(v, 1, 64, none=True, safe=True),
}
_HEALTH = {
    "trial_s": lambda v: _int(v, 10, 86400),
    "need_mqtt": _bool,
    "max_loop_ms": lambda v: _int(v, 5, 10000),
}


def _ws_url(v):
    if v is None:
        return None
    if type(v) is not str or not 8 <= len(v) <= 256 or not (v.startswith("ws://") or v.startswith("wss://")) \
            or " " in v:
        return "must be null or a ws:// or wss:// URL of at most 256 characters"


_OCPP = {
    "url": _ws_url,
    "charge_box_id": lambda v: _str(v, 1, 48, none=True, safe=True),
    "auth_key": lambda v: _str(v, 8, 64, none=True),
    "ca": lambda v: _str(v, 1, 128, none=True),
    "signed_updates_only": _bool,
}
_GROUPS = {"mqtt": _MQTT, "health": _HEALTH, "ocpp": _OCPP}


def _field(k, v):
    # error text for one top-level key (groups: key by key), or None
    if k in _GROUPS:
        if type(v) is not dict:
            return "%s must be an object" % k
        for kk, vv in v.items():
            chk = _GROUPS[k].get(kk)
            if chk is None:
                return "unknown key: %s.%s" % (k, kk)
            err = chk(vv)
            if err:
                return "%s.%s %s" % (k, kk, err)
        return None
    chk = _CHECKS.get(k)
    if chk is None:
        return "unknown key: %s" % k
    err = chk(v)
    if err:
        return "%s %s" % (k, err)
    return None


def _cross(cfg):
    # rules between fields of a whole config
    if cfg["fallback_current_a"] > cfg["max_current_a"]:
        return "fallback_current_a must not exceed max_current_a"
    m = cfg["mqtt"]
    if m["tls"] and not m["ca"]:
        return "mqtt.tls needs mqtt.ca"
    if m["password"] is not None and m["user"] is None:
        return "mqtt.password needs mqtt.user"
    if (m.get("cert") is None) != (m.get("key") is None):
        return "mqtt.cert and mqtt.key go together"
    if m.get("cert") and not m["tls"]:
        return "mqtt.cert needs mqtt.tls"
    o = cfg["ocpp"]
    if o["url"] and o["url"].startswith("wss://") and not o["ca"]:
        return "ocpp.url wss:// needs ocpp.ca"
    return None


def validate(changes, base=None):
    """None when `changes` (a partial config: nested groups may be partial)
    is acceptable on top of `base` (default DEFAULTS), else an error text."""
    if type(changes) is not dict:
        return "changes must be an object"
    if not changes:
        return "no changes given"
    for k in sorted(changes):
        err = _field(k, changes[k])
        if err:
            return err
    return _cross(merge(base or DEFAULTS, changes))


def merge(base, changes):
    """A new config: `changes` over a copy of `base` (groups merged key by key)."""
    new = _copy(base)
    for k, v in changes.items():
        if k in _GROUPS and type(v) is dict:
            new[k].update(v)
        else:
            new[k] = list(v) if type(v) is list else v
    return new


def encode(cfg, seq):
    """The protected file for `cfg` (a dict) with sequence number `seq`."""
    body = json.dumps(cfg).encode()
    if len(body) < 3 or body[-1:] != b"}":
        raise ValueError("config must be a non-empty object")
    head = body[:-1] + (',"_seq":%d' % (seq & _SEQ_MASK)).encode()
    data = head + (',"_crc":"%08x"}' % crc32(head)).encode()
    if len(data) > _MAX_FILE:
        raise ValueError("config too large (%d bytes, max %d)" % (len(data), _MAX_FILE))
    return data


def decode(data):
    """(dict, seq) of a protected file, or (None, reason)."""
    n = len(data)
    if n == 0:
        return None, "empty"
    if n < _TAIL + 2 or data[n - _TAIL:n - 10] != b',"_crc":"' or data[n - 2:] != b'"}':
        return None, "no checksum (torn or not written by this firmware)"
    if ("%08x" % (crc32(memoryview(data)[:n - _TAIL]) & 0xFFFFFFFF)).encode() != data[n - 10:n - 2]:
        return None, "checksum mismatch"
    try:
        d = json.loads(data)
    except Exception:
        return None, "checksum good but not JSON"
    seq = d.pop("_seq", None) if type(d) is dict else None
    d.pop("_crc", None)
    if type(seq) is not int or not 0 <= seq <= _SEQ_MASK:
        return None, "bad sequence number"
    return d, seq


def newer(a, b):
    """True when sequence number a is newer than b (mod 2**30)."""
    d = (a - b) & _SEQ_MASK
    return 0 < d < 0x20000000


def _complete(d, strict):
    """A whole config from a stored dict: every known key checked (one bad
    value rejects it), missing optional keys from the template. Unknown keys
    are kept (a newer firmware may have written them) unless `strict`.
    Returns (cfg, None) or (None, reason)."""
    if type(d) is not dict:
        return None, "not an object"
    for k in REQUIRED:
        if k not in d:
            return None, "missing " + k
    cfg = _copy(DEFAULTS)
    for k, v in d.items():
        if type(k) is not str or k.startswith("_"):
            return None, "bad key"
        grp = _GROUPS.get(k)
        if grp is not None:
            if type(v) is not dict:
                return None, "%s must be an object" % k
            for kk, vv in v.items():
                chk = grp.get(kk)
                if chk is None:
                    if strict:
                        return None, "unknown key: %s.%s" % (k, kk)
                elif chk(vv):
                    return None, "%s.%s %s" % (k, kk, chk(vv))
                cfg[k][kk] = vv
            continue
        chk = _CHECKS.get(k)
        if chk is None:
            if strict:
                return None, "unknown key: " + k
        elif chk(v):
            return None, "%s %s" % (k, chk(v))
        cfg[k] = list(v) if type(v) is list else (_copy(v) if type(v) is dict else v)
    err = _cross(cfg)
    if err:
        return None, err
    return cfg, None


def _read(root, name):
    """(data bytes or None, reason)."""
    p = _path(root, name)
    try:
        n = os.stat(p)[6]
        if n > _MAX_FILE:
            return None, "too large"
        with open(p, "rb") as f:
            data = f.read(n)
    except OSError:
        return None, "missing"
    return data, None


def _copies(root):
    """[(name, cfg or None, seq, reason)] for both copies."""
    out = []
    for name in (FILE, COPY):
        data, why = _read(root, name)
        cfg, seq = None, 0
        if data is not None:
            d, seq = decode(data)
            if d is None:
                why = seq
                seq = 0
            else:
                cfg, why = _complete(d, False)
        out.append((name, cfg, seq, why))
        data = None
    return out


def _failsafe(reason):
    global fault, last_error
    fault = last_error = "no valid configuration (%s): no current offered" % reason
    cfg = _copy(DEFAULTS)
    cfg.update(_FAILSAFE)
    cfg["mqtt"]["host"] = None
    cfg["install_window"] = None
    cfg["fault"] = fault
    return cfg


def _legacy(root, primary):
    # an older deploy's plain /config.json: strictly valid or refused
    data, why = _read(root, FILE)
    if data is None or data.find(b'"_crc"') >= 0 or data.find(b'"_seq"') >= 0:
        return None, primary
    try:
        d = json.loads(data)
    except Exception:
        return None, primary
    cfg, why = _complete(d, True)
    if cfg is None:
        return None, "legacy config.json refused: " + why
    err = _store(root, cfg, 1)
    return cfg, "legacy config.json accepted once and %s" % (
        "rewritten with a checksum" if err is None else "NOT rewritten: " + err)


def _best(root):
    """(cfg, seq, note) of the newest valid copy, or (None, 0, reason)."""
    (n0, c0, s0, w0), (n1, c1, s1, w1) = _copies(root)
    if c0 is None and c1 is None:
        if w0 == "missing" and w1 == "missing":
            return None, 0, "no " + FILE
        return None, 0, "%s: %s; %s: %s" % (n0, w0, n1, w1)
    if c1 is None or (c0 is not None and not newer(s1, s0)):
        return c0, s0, None if c1 is not None else "%s: %s (%s used)" % (n1, w1, n0)
    return c1, s1, "%s: %s (%s used)" % (n0, w0 or "older copy", n1)


def load(root="/"):
    """The stored configuration, or the fail-safe one (with "fault") when there is no
    valid one. Never raises, never writes (except the one-time rewrite of a
    legacy file)."""
    global last_error, fault
    last_error = fault = None
    try:
        cfg, _, note = _best(root)
        if cfg is None and note.startswith(FILE + ": no checksum") and note.endswith(COPY + ": missing"):
            cfg, note = _legacy(root, note)
    except MemoryError:
        return _failsafe("out of memory reading it")
    if cfg is None:
        return _failsafe(note)
    last_error = note
    return cfg


def _write_copy(path, data):
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        with open(tmp, "rb") as f:
            back = f.read(len(data) + 1)
        if back != data:
            raise OSError("read-back mismatch")
        back = None
        try:
            os.rename(tmp, path)
        except OSError:   # FAT: no rename over an existing file
            os.remove(path)
            os.rename(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        return "cannot write %s: %s" % (path, e)
    return None


def _store(root, cfg, seq):
    try:
        data = encode(cfg, seq)
    except ValueError as e:
        return str(e)
    for name in (COPY, FILE):
        err = _write_copy(_path(root, name), data)
        if err:
            return err
    return None


def install(root, cfg):
    """The installer's write (deploy, provision, service console): `cfg`, a
    whole or partial configuration over the template, replaces what is stored.
    Returns None or an error text (nothing written)."""
    global last_error
    if type(cfg) is not dict:
        return "config must be an object"
    for k in REQUIRED:
        if k not in cfg:
            return "missing " + k
    err = validate(cfg)
    if err:
        return err
    try:
        _, seq, _ = _best(root)
    except MemoryError:
        seq = 0
    last_error = _store(root, merge(DEFAULTS, cfg), seq + 1)
    return last_error


def check_remote(changes, cur):
    """None when a remote (MQTT/OCPP) change may be applied over `cur`."""
    if type(changes) is not dict:
        return "changes must be an object"
    for k in sorted(changes):
        if k in INSTALLER:
            return "installer setting: %s (only evsectl deploy or the service console may change it)" % k
    if changes.get("require_auth") is False and cur.get("require_auth") is True:
        return "require_auth may only be turned on remotely"
    return None


def update(root, changes, installer=False):
    """Validate `changes` against the stored configuration and store the
    result (both copies). Remote callers (installer=False) may change
    operator settings only. Returns None, or an error text (flash untouched)."""
    global last_error
    cur = load(root)
    if cur.get("fault"):
        return cur["fault"] + "; only the installer can write a configuration"
    seq = _best(root)[1]
    err = (None if installer else check_remote(changes, cur)) or validate(changes, cur)
    if err:
        return err
    last_error = _store(root, merge(cur, changes), seq + 1)
    return last_error


def public(cfg):
    """A copy safe to publish (get_config): passwords and keys hidden."""
    out = _copy(cfg)
    for grp, key in (("mqtt", "password"), ("ocpp", "auth_key")):
        g = out.get(grp)
        if type(g) is dict and g.get(key) is not None:
            g[key] = REDACTED
    return out
