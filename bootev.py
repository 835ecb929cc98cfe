# Per-slot evidence kept OUTSIDE the boot record (bootstrap side, beside
# boot.py, never replaced by OTA; boot.py imports it when it needs it).
#
# /slots/<x>.sig  what the verified signed image of slot x declared (version,
#                 security counter, image SHA-256), bound to the slot by the
#                 SHA-256 of its MANIFEST; written by the updater after install.
# /slots/<x>.ok   the image SHA-256 of a slot that passed its trial; written
#                 after boot.confirm() (health.settle).
# The writers live in firmware/ota/evidence.py (compiled with the slot code).
# Both framed like a record copy: b'EVS1' | u16 LE length | JSON | CRC-32.
# They decide when both record copies are lost (default_record), whether a
# fallback is a plain one or a last resort (fallback_doubt), and which version
# a slot runs (slot_version: signed, not the editable MANIFEST). See docs/boot.md.
import os
import json
import struct
import hashlib
from boot import (Record, crc32, check_slot, read_manifest, other, _opt_int, _opt_str,
                  _vkey, _root, _hexdigest, _SLOTS)

_EV_MAGIC = b"EVS1"
_MAX_EV = 200
_BUF = 512


def _read_ev(path):
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_EV + 11)
    except OSError:
        return None
    if len(data) < 10 or data[:4] != _EV_MAGIC:
        return None
    n = struct.unpack("<H", data[4:6])[0]
    if n > _MAX_EV or len(data) != n + 10 or \
            struct.unpack("<I", data[6 + n:])[0] != crc32(data[6:6 + n], crc32(data[:6])):
        return None
    try:
        d = json.loads(data[6:6 + n])
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def _manifest_digest(slot, root):
    h = hashlib.sha256()
    buf = bytearray(_BUF)
    mv = memoryview(buf)
    try:
        with open(root + "slots/" + slot + "/MANIFEST", "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    except OSError:
        return None
    return _hexdigest(h)


def _has_evidence(slot, root):
    try:
        os.stat(root + "slots/" + slot + ".sig")
        return True
    except OSError:
        return False


def slot_evidence(slot, root="/", manifest=None):
    # The slot's signed evidence {v, sec, img, man} when it is intact and
    # bound to the slot's current MANIFEST; else None.
    root = _root(root)
    ev = _read_ev(root + "slots/" + slot + ".sig")
    if ev is None or not isinstance(ev.get("v"), str) or not _opt_int(ev.get("sec")) \
            or not isinstance(ev.get("img"), str):
        return None
    if ev.get("man") != _manifest_digest(slot, root):
        return None
    return ev


def slot_version(slot, root="/", manifest=None):
    # (version, signed): the signed version when the slot's evidence is bound
    # to it, else the MANIFEST's (unsigned: a sealed deploy) with signed False;
    # (None, False) when evidence exists but does not match (edited MANIFEST).
    root = _root(root)
    ev = slot_evidence(slot, root)
    if ev is not None:
        return ev["v"], True
    if _has_evidence(slot, root):
        return None, False
    m = manifest if manifest is not None else read_manifest(slot, root)
    v = m.get("version") if m else None
    return (v if _opt_str(v) else None), False


def is_confirmed(slot, root="/", ev=None):
    """The slot passed a trial with the image it holds now (marker bound to the image digest)."""
    root = _root(root)
    ev = ev or slot_evidence(slot, root)
    ok = _read_ev(root + "slots/" + slot + ".ok")
    return ev is not None and ok is not None and ok.get("img") == ev["img"]


def default_record(root):
    """No valid copy (blank or both lost). Evidence kept outside the record
    decides: the active slot is the one that verifies, has the highest signed
    version AND a confirmation marker; a signed slot never confirmed is only
    booted on trial (pending, one trial); the floor and the highest confirmed
    version are what the confirmed slots' signed evidence proves (never 0 when
    a confirmed image carries a counter). Slots without evidence (sealed by a
    deploy) count as confirmed, after every confirmed signed slot."""
    conf, legacy, unconf = None, None, None
    floor, top = 0, None
    for s in _SLOTS:
        ok, _, m = check_slot(s, root)
        ev = slot_evidence(s, root, m) if ok else None
        if ev is not None and is_confirmed(s, root, ev):
            sec = ev.get("sec") or 0
            floor = sec if sec > floor else floor
            if top is None or _vkey(ev["v"]) > _vkey(top):
                top = ev["v"]
    for s in _SLOTS:
        ok, _, m = check_slot(s, root)
        if not ok:
            continue
        ev = slot_evidence(s, root, m)
        if ev is None:
            if _has_evidence(s, root):
                continue          # evidence present but not bound: trust nothing
            v = _vkey(m.get("version"))
            if legacy is None or v > legacy[1]:
                legacy = (s, v)
        elif (ev.get("sec") or 0) < floor:
            continue
        elif is_confirmed(s, root, ev):
            v = _vkey(ev["v"])
            if conf is None or v > conf[1]:
                conf = (s, v)
        else:
            v = _vkey(ev["v"])
            if unconf is None or v > unconf[1]:
                unconf = (s, v, ev)
    best = conf or legacy
    rec = Record(best[0] if best else "a")
    rec.floor, rec.top = floor, top
    if conf is not None:
        rec.version = slot_evidence(conf[0], root)["v"]
    if best is None and unconf is not None:
        # only a never-confirmed slot: it runs on trial, never confirmed by default
        rec.active = other(unconf[0])
        rec.pending, rec.trials, rec.confirmed = unconf[0], 1, False
        rec.pending_sec, rec.pending_version = unconf[2].get("sec"), unconf[2]["v"]
    return rec


def fallback_doubt(slot, root, floor):
    """Why falling back to `slot` is only a last resort, or None when it is a
    plain fallback: below the anti-rollback floor, or a signed slot that never
    passed a trial."""
    ev = slot_evidence(slot, root)
    sec = (ev.get("sec") or 0) if ev is not None else 0
    if floor > 0 and sec < floor:
        return "below_floor"
    if _has_evidence(slot, root) and not is_confirmed(slot, root, ev):
        return "unconfirmed"
    return None
