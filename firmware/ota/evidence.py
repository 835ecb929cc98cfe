# Writes the per-slot evidence the bootstrap reads (bootev.py, docs/boot.md):
# /slots/<x>.sig after an install of a verified signed image, /slots/<x>.ok
# after its trial passed. Same framing as a boot-record copy:
#   b'EVS1' | u16 LE length | JSON | u32 LE CRC-32(magic+length+JSON).
# Lives with the slot code (compiled .mpy) so that the agent never compiles
# bootstrap source while it runs.
import json
import struct
import hashlib
import boot

_EV_MAGIC = b"EVS1"
_MAX_EV = 200


def _frame(d):
    body = json.dumps(d).encode()
    head = _EV_MAGIC + struct.pack("<H", len(body))
    return head + body + struct.pack("<I", boot.crc32(body, boot.crc32(head)))


def _write_ev(path, d):
    with open(path, "wb") as f:
        f.write(_frame(d))


def _unframe(data):
    if len(data) < 10 or data[:4] != _EV_MAGIC:
        return None
    n = struct.unpack("<H", data[4:6])[0]
    if n > _MAX_EV or len(data) != n + 10 or \
            struct.unpack("<I", data[6 + n:])[0] != boot.crc32(data[6:6 + n], boot.crc32(data[:6])):
        return None
    try:
        d = json.loads(data[6:6 + n])
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def manifest_digest(slot, root="/"):
    h = hashlib.sha256()
    buf = bytearray(512)
    mv = memoryview(buf)
    try:
        with open(boot._root(root) + "slots/" + slot + "/MANIFEST", "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    except OSError:
        return None
    return boot._hexdigest(h)


def write_evidence(slot, version, sec_counter, image_sha256, root="/"):
    """After install + verify: bind what the signed image declared (version,
    security counter, image SHA-256) to the slot's MANIFEST."""
    root = boot._root(root)
    if slot not in ("a", "b") or not isinstance(version, str) or len(version) > 64 \
            or not boot._opt_int(sec_counter):
        raise ValueError("bad evidence")
    md = manifest_digest(slot, root)
    if md is None:
        raise ValueError("slot %s has no MANIFEST" % slot)
    boot.drop_evidence(slot, root)
    _write_ev(root + "slots/" + slot + ".sig",
              {"v": version, "sec": sec_counter, "img": image_sha256, "man": md})


def mark_confirmed(slot, root="/"):
    """After boot.confirm(): the marker that `slot` passed a trial with the
    image it holds now (bound to the image digest). False when the slot has
    no intact, bound evidence (a sealed deploy) or the write failed."""
    root = boot._root(root)
    try:
        with open(root + "slots/" + slot + ".sig", "rb") as f:
            ev = _unframe(f.read(_MAX_EV + 11))
    except OSError:
        return False
    if ev is None or not isinstance(ev.get("img"), str) or ev.get("man") != manifest_digest(slot, root):
        return False
    try:
        _write_ev(root + "slots/" + slot + ".ok", {"img": ev["img"]})
    except OSError:
        return False  # the record is the authority; the marker only matters when it is lost
    return True
