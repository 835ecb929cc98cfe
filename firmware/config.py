# Device configuration: <root>/config.json merged over DEFAULTS.
# load() never raises: a missing file gives the defaults, a corrupt one the
# defaults plus `last_error`; a bad value falls back to its default (error
# recorded). update() validates first and writes atomically (tmp + rename),
# so the file is either the old or the new one, never half of each.
import os
import json

FILE = "config.json"
BOARDS = ("sim", "esp32", "rp2")
REDACTED = "***"

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
    },
    "telemetry_ms": 10000,
    "install_window": None,   # [start_min, end_min] local time, may wrap midnight; None: any time
    "health": {
        "trial_s": 120,       # a trial boot must stay healthy this long before confirming
        "need_mqtt": True,    # ... and must have reached the broker
        "max_loop_ms": 50,    # worst control period tolerated during the trial
    },
}

last_error = None


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
    "install_window": _window,
}
_MQTT = {
    "host": lambda v: _str(v, 0, 253),   # "" = no MQTT link
    "port": lambda v: _int(v, 1, 65535),
    "user": lambda v: _str(v, 1, 64, none=True),
    "password": lambda v: _str(v, 1, 128, none=True),
    "tls": _bool,
    "ca": lambda v: _str(v, 1, 128, none=True),
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


def load(root="/"):
    """The configuration (defaults merged). Never raises; problems go to
    `last_error` and the affected values keep their defaults."""
    global last_error
    last_error = None
    cfg = _copy(DEFAULTS)
    try:
        with open(_path(root, FILE)) as f:
            data = json.load(f)
    except OSError:
        return cfg   # no file: defaults
    except Exception as e:
        last_error = "config.json unreadable (%s): defaults used" % type(e).__name__
        return cfg
    if type(data) is not dict:
        last_error = "config.json is not an object: defaults used"
        return cfg
    bad = []
    for k, v in data.items():
        if k in _GROUPS and type(v) is dict:
            for kk, vv in v.items():
                if _field(k, {kk: vv}) is None:
                    cfg[k][kk] = vv
                else:
                    bad.append(k + "." + kk)
        elif _field(k, v) is None:
            cfg[k] = v
        else:
            bad.append(k)
    err = _cross(cfg)
    if err:  # the file breaks a rule between fields: take the safe side
        cfg["fallback_current_a"] = min(cfg["fallback_current_a"], cfg["max_current_a"])
        m = cfg["mqtt"]
        if m["tls"] and not m["ca"]:
            m["tls"] = False
        if m["user"] is None:
            m["password"] = None
        o = cfg["ocpp"]
        if o["url"] and o["url"].startswith("wss://") and not o["ca"]:
            o["url"] = None
        bad.append("(" + err + ")")
    if bad:
        last_error = "config.json: bad values ignored: " + ", ".join(sorted(bad))
    return cfg


def update(root, changes):
    """Validate `changes` against the stored config and persist the result
    atomically. Returns None, or an error text (and the file is untouched)."""
    cur = load(root)
    err = validate(changes, cur)
    if err:
        return err
    new = merge(cur, changes)
    path = _path(root, FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(new, f)
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
        return "cannot write config: %s" % e
    return None


def public(cfg):
    """A copy safe to publish (get_config): the password is hidden."""
    out = _copy(cfg)
    if out.get("mqtt", {}).get("password") is not None:
        out["mqtt"]["password"] = REDACTED
    if out.get("ocpp", {}).get("auth_key") is not None:
        out["ocpp"]["auth_key"] = REDACTED
    return out
