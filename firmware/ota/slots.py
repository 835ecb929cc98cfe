# A/B slots on the device filesystem: /slots/a/, /slots/b/ (package files +
# MANIFEST), staging files /slots/<x>.img. The boot record and the manifest
# check live in /boot.py (outside the slots); this module calls into it.
import gc
import os
import json
import boot
from firmware.ota import bundle
from firmware.ota.job import SLOTS
from firmware.ota import job as _job

_BUF = 1024
_DIR = 0x4000


class SlotError(Exception):
    pass


def _check(slot):
    if slot not in SLOTS:
        raise SlotError("bad slot %r" % (slot,))


def slot_dir(slot, root="/"):
    _check(slot)
    return boot._root(root) + "slots/" + slot


def staging_path(slot, root="/"):
    """Where the updater downloads the image destined for `slot`."""
    _check(slot)
    return _job.staging_path(slot, root)


def inactive(root="/"):
    """The slot an update goes into: the one that is not active."""
    return boot.other(boot.read_record(root).active)


def verify_slot(slot, root="/"):
    """Same check as the bootstrap: files match the MANIFEST (sizes, SHA-256, no extras)."""
    return boot.verify_slot(slot, root)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _rmtree(p):
    for ent in list(os.ilistdir(p)):
        q = p + "/" + ent[0]
        if ent[1] == _DIR:
            _rmtree(q)
            os.rmdir(q)
        else:
            os.remove(q)


def _mkdir(p):
    if not _exists(p):
        os.mkdir(p)


def _drop_manifest(d):
    # first thing before the files change: a cut from here on leaves the slot unbootable
    for name in ("/MANIFEST", "/MANIFEST.tmp"):
        try:
            os.remove(d + name)
        except OSError:
            pass


def wipe(slot, root="/"):
    """Empty the slot directory, MANIFEST first (so a cut leaves it unbootable)."""
    d = slot_dir(slot, root)
    boot.drop_evidence(slot, root)      # the slot's signed evidence goes first
    _drop_manifest(d)
    if _exists(d):
        _rmtree(d)
    else:
        _mkdir(boot._root(root) + "slots")
        os.mkdir(d)


def _write_manifest(d, version, board, mpy, items):
    """MANIFEST.tmp then rename: the MANIFEST appears complete or not at all.
    items(f) writes the file table and returns (count, total size)."""
    tmp = d + "/MANIFEST.tmp"
    with open(tmp, "w") as f:
        f.write('{"version": %s, "board": %s, "mpy": %s, "files": {' % (
            json.dumps(version), json.dumps(board), json.dumps(mpy)))
        count, size = items(f)
        f.write('}, "count": %d, "size": %d}' % (count, size))
    os.rename(tmp, d + "/MANIFEST")
    return {"version": version, "board": board, "mpy": mpy, "count": count, "size": size}


def free_bytes(root="/"):
    """Free bytes of the filesystem holding root, or None when unknown."""
    try:
        st = os.statvfs(boot._root(root))
        return st[0] * st[4]
    except (OSError, AttributeError):
        return None


def _vt(v):
    # version text -> (major, minor, revision, build), as updater.version_tuple
    s, _, b = str(v).partition("+")
    t = [int(x) for x in s.split(".")][:3]
    while len(t) < 3:
        t.append(0)
    return tuple(t) + (int(b) if b else 0,)


def _slot_size(slot, root):
    # bytes the slot's files hold (given back by the wipe): the "size" at the
    # end of its MANIFEST (written last by _write_manifest); 0 when unknown
    try:
        with open(slot_dir(slot, root) + "/MANIFEST", "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(n - 32 if n > 32 else 0)
            tail = f.read(32)
        i = tail.rfind(b'"size": ')
        return int(tail[i + 8:].rstrip(b"} \n")) if i >= 0 else 0
    except (OSError, ValueError):
        return 0


def install(slot, image_path, payload_offset, payload_size, root="/", board=None,
            version=None, reserve=0, buf=None):
    """Unpack the bundle at image_path[payload_offset:+payload_size] (its
    signature already checked) into `slot`: check the bundle's structure,
    wipe the slot, stream every file (SHA-256 checked), write the MANIFEST
    last. Returns the manifest header {version, board, mpy, count, size}
    (boot.read_manifest() loads the whole file table). Raises SlotError or
    bundle.BundleError (the slot is then left without MANIFEST: unbootable)."""
    _check(slot)
    root = boot._root(root)
    rec = boot.read_record(root)
    if slot == rec.active and boot.verify_slot(slot, root):
        raise SlotError("slot %s is the active slot" % slot)
    if buf is None or len(buf) < _BUF:   # the caller's buffer (the updater's, idle by then) saves a block
        buf = bytearray(_BUF)
    with open(image_path, "rb") as f:
        f.seek(payload_offset)
        r = bundle.Reader(f, payload_size, buf, board)
        r.check()
        if version is not None:
            try:
                same = _vt(r.version) == _vt(version)
            except (ValueError, TypeError):
                same = False
            if not same:
                raise SlotError("version mismatch: bundle %r, signed image header %s" % (r.version, version))
        free = free_bytes(root)
        if free is not None:
            # unpacked size + one block per file (rounding), against what is free
            # once the slot's current files are gone, minus the reserve
            st = os.statvfs(root)
            need = r.total + r.count * st[0] + reserve
            avail = free + _slot_size(slot, root)
            if need > avail:
                raise SlotError("no space: bundle unpacks to %d bytes (+%d reserve), %d available"
                                % (r.total, reserve, avail))
            st = None
        gc.collect()   # the checks' garbage must not split the deflate window's block
        if rec.pending == slot:
            boot.clear_pending(root)
        wipe(slot, root)
        d = slot_dir(slot, root)
        m = r.meta

        def items(mf):
            n = [0]

            def on_file(e, sha):
                mf.write('%s"%s": [%d, "%s"]' % (", " if n[0] else "", e.path, e.size, sha))
                n[0] += 1
            bundle.unpack(r, d, on_file)
            return n[0], r.total

        return _write_manifest(d, r.version, m.get("board"), m.get("mpy"), items)


def _hash_file(p, buf):
    import hashlib
    h = hashlib.sha256()
    mv = memoryview(buf)
    n_total = 0
    with open(p, "rb") as f:
        while True:
            n = f.readinto(buf)
            t = bundle._tick[0]
            if t is not None:
                t()
            if not n:
                break
            n_total += n
            h.update(buf if n == len(buf) else mv[:n])
    return n_total, bundle._hex(h.digest())


def seal(slot, version, root="/", board=None):
    """Write the MANIFEST of the files now in `slot` (deploys with mpremote
    copy files, then seal). Returns the manifest header."""
    d = slot_dir(slot, root)
    boot.drop_evidence(slot, root)      # sealed files are not a signed image
    _drop_manifest(d)
    buf = bytearray(_BUF)
    tot = [0, 0]

    def walk(top, rel, mf):
        for ent in list(os.ilistdir(top)):
            p = rel + ent[0]
            if ent[1] == _DIR:
                walk(top + "/" + ent[0], p + "/", mf)
            elif p != "MANIFEST.tmp":
                size, sha = _hash_file(top + "/" + ent[0], buf)
                mf.write('%s%s: [%d, "%s"]' % (", " if tot[0] else "", json.dumps(p), size, sha))
                tot[0] += 1
                tot[1] += size
        return tot[0], tot[1]

    return _write_manifest(d, version, board, None, lambda mf: walk(d, "", mf))
