# The queue of SecurityEventNotifications (security whitepaper ed. 3, A04):
# critical events "MUST be queued with a guaranteed delivery", so every event
# goes to a small queue of its own on flash, <link dir>/secq.json (the newest
# MAX kept; no file when empty), written when an event is added and when the
# CSMS answered one. link.py keeps the list (link._sec) and sends its head;
# this module is imported only to add, load or save and dropped after (events
# are rare), so its bytecode is not kept in the heap. Entries read back are
# checked: only what add() writes (type, timestamp, techInfo strings) is kept.
import os
import json
from micropython import const

MAX = const(8)
# ws.py failure kinds (ws.fail) and the link's MemoryError -> event type
NAMES = {"cert": "InvalidCentralSystemCertificate", "auth": "FailedToAuthenticateAtCentralSystem",
         "memory": "MemoryExhaustion"}


def _path(lk):
    return lk._dir.rstrip("/") + "/secq.json"


def _ok(e):
    if type(e) is not dict or type(e.get("type")) is not str or type(e.get("timestamp")) is not str:
        return False
    for k in e:
        if k not in ("type", "timestamp", "techInfo") or type(e[k]) is not str:
            return False
    return True


def load(lk):
    """lk._sec from flash (at start); a missing or unreadable file: empty."""
    try:
        with open(_path(lk)) as f:
            q = json.load(f).get("q")
    except (OSError, ValueError, AttributeError):
        q = None
    lk._sec = [e for e in q if _ok(e)][-MAX:] if type(q) is list else []


def add(lk, kind, info=None):
    p = {"type": NAMES.get(kind, kind), "timestamp": lk._ts()}
    if info:
        p["techInfo"] = info[:255]
    if kind in NAMES:
        print("ocpp: security event %s: %s" % (p["type"], info))
    q = lk._sec
    q.append(p)
    if len(q) > MAX:
        q.pop(0)
    save(lk)


def boot(lk):
    # the first BootNotification Accepted after a boot: after an OCPP Reset
    # (state.json "why") ResetOrReboot, else StartupOfTheDevice
    b = lk._boot_ev
    lk._boot_ev = None
    add(lk, "ResetOrReboot" if b else "StartupOfTheDevice", b)


def done(lk, p):
    # the CSMS answered the event p (the head of the queue)
    q = lk._sec
    if q and q[0] is p:
        q.pop(0)
        save(lk)


def save(lk):
    p = _path(lk)
    try:
        if lk._sec:
            with open(p + ".tmp", "w") as f:
                json.dump({"q": lk._sec}, f)
            try:
                os.rename(p + ".tmp", p)
            except OSError:
                os.remove(p)
                os.rename(p + ".tmp", p)
        else:
            os.remove(p)
    except OSError as e:
        if lk._sec:
            print("ocpp: security events not saved: %r" % (e,))
