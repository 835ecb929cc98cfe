# OCPP-J 1.6 framing (OCPP-J 1.6 section 4): CALL [2, id, action, payload],
# CALLRESULT [3, id, payload], CALLERROR [4, id, code, description, details],
# and the payload checks shared by the handlers. No I/O.
import json
from micropython import const

CALL = const(2)
RESULT = const(3)
ERROR = const(4)

# error codes (OCPP-J 1.6 4.2.3, with the errata's spelling of FormatViolation)
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL = "InternalError"
PROTOCOL = "ProtocolError"
FORMAT = "FormatViolation"
PROPERTY = "PropertyConstraintViolation"
OCCURENCE = "OccurenceConstraintViolation"
TYPE = "TypeConstraintViolation"
GENERIC = "GenericError"


class CallError(Exception):
    def __init__(self, code, desc=""):
        super().__init__(code, desc)
        self.code = code
        self.desc = desc


_ids = [0]


def new_id():
    """A unique message id: a per-boot random prefix and a counter."""
    if not _ids[0]:
        import os
        b = os.urandom(3)
        _ids.append("%02x%02x%02x" % (b[0], b[1], b[2]))
    _ids[0] += 1
    return "%s-%d" % (_ids[1], _ids[0])


def call(uid, action, payload):
    return json.dumps([CALL, uid, action, payload])


def result(uid, payload):
    return json.dumps([RESULT, uid, payload])


def error(uid, code, desc=""):
    return json.dumps([ERROR, uid, code, desc[:255], {}])


def decode(raw):
    """raw text -> (type, id, a, b): CALL (2, id, action, payload),
    RESULT (3, id, payload, None), ERROR (4, id, code, desc). A frame that
    cannot be understood raises CallError (id unknown: None) or ValueError."""
    try:
        m = json.loads(raw)
    except ValueError:
        raise CallError(PROTOCOL, "not JSON")
    if type(m) is not list or len(m) < 3 or type(m[0]) is not int or type(m[1]) is not str:
        raise CallError(PROTOCOL, "not an OCPP-J message")
    t = m[0]
    uid = m[1]
    if len(uid) > 36:
        raise CallError(PROTOCOL, "message id too long")
    if t == CALL:
        if len(m) != 4 or type(m[2]) is not str:
            return t, uid, None, CallError(PROTOCOL, "CALL must be [2, id, action, payload]")
        if type(m[3]) is not dict:
            return t, uid, m[2], CallError(FORMAT, "payload must be an object")
        return t, uid, m[2], m[3]
    if t == RESULT:
        return t, uid, m[2] if len(m) == 3 and type(m[2]) is dict else None, None
    if t == ERROR:
        return t, uid, m[2] if len(m) > 2 else None, m[3] if len(m) > 3 else ""
    raise CallError(PROTOCOL, "unknown message type %r" % (t,))


# ---- payload checks (raise CallError) ----------------------------------------

def only(p, allowed):
    for k in p:
        if k not in allowed:
            raise CallError(FORMAT, "unknown field %s" % (k,))


def get(p, key, typ, required=True, choices=None, lo=None, hi=None):
    if key not in p:
        if required:
            raise CallError(OCCURENCE, "missing field %s" % key)
        return None
    v = p[key]
    if typ is int:
        ok = type(v) is int
    elif typ is float:
        ok = type(v) in (int, float) and v == v
    else:
        ok = type(v) is typ
    if not ok:
        raise CallError(TYPE, "%s has the wrong type" % key)
    if choices is not None and v not in choices:
        raise CallError(PROPERTY, "%s: %s is not allowed" % (key, v))
    if lo is not None and v < lo or hi is not None and (len(v) if typ is str else v) > hi:
        raise CallError(PROPERTY, "%s out of range" % key)
    return v
