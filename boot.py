# Bootstrap of the EV-charger agent: boot record, slot choice, manifest check.
# Lives OUTSIDE the A/B slots and is never replaced by an OTA update.
# Importing this module does nothing but define functions (MicroPython also
# runs it as a script at power-up: that is harmless). main.py calls main().
# It must not import anything from firmware/ before a slot is chosen.
#
# Boot record: two copies /bootrec.0 and /bootrec.1, written alternately, each
#   b'EVR1' | u16 LE body length | JSON body | u32 LE CRC32(magic+length+body)
# The valid copy with the newest sequence number (serial arithmetic mod 2**32)
# wins; a write always goes to the OTHER copy, so a power cut at any byte
# leaves the previous record intact. See docs/boot.md.
import sys
import os
import json
import hashlib
import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # ports built without binascii.crc32
    _crc32 = None

_MAGIC = b"EVR1"
_MAX_BODY = 480
_SLOTS = ("a", "b")
_DIR = 0x4000
_BUF = 512
_MAX_MANIFEST = 32768
_MAX_REASON = 40
_MAX_TRIALS = 255
_MAX_NONTRIAL_FAILS = 3
_IMPORT_TRIES = 3          # an import is retried (gc between) before anything is persisted
_ROM = "/rom"              # where bootrom.py mounts the selected slot's ROMFS image


def crc32(data, crc=0):
    # CRC-32 (IEEE 802.3, as zlib/binascii); falls back to a bitwise loop.
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return ~crc & 0xFFFFFFFF


def _root(root):
    return root if root.endswith("/") else root + "/"


def other(slot):
    return "b" if slot == "a" else "a"


class Record:
    # The boot record. Attributes (also readable as rec['name']):
    # seq, active, pending, trials, confirmed, floor, pending_sec,
    # pending_version, reason, failed_version, boots.

    FIELDS = ("seq", "active", "pending", "trials", "confirmed", "floor",
              "pending_sec", "pending_version", "reason", "failed_version", "boots", "top", "version")
    OPTIONAL = ("top", "version")     # absent in records written before it existed

    def __init__(self, active="a"):
        self.seq = 0
        self.active = active
        self.pending = None
        self.trials = 0
        self.confirmed = True
        self.floor = 0
        self.pending_sec = None
        self.pending_version = None
        self.reason = None
        self.failed_version = None
        self.boots = 0
        self.top = None          # highest version ever confirmed (downgrade check)
        self.version = None      # the active slot's signed version (None: from its MANIFEST)

    def __getitem__(self, name):
        return getattr(self, name)

    def as_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    def __repr__(self):
        return "Record(%r)" % self.as_dict()


# ---- encoding ---------------------------------------------------------------

def _opt_str(v):
    return v is None or (isinstance(v, str) and len(v) <= 64)


def _opt_int(v):
    return v is None or (isinstance(v, int) and 0 <= v <= 0xFFFFFFFF)


def encode(rec):
    body = json.dumps(rec.as_dict()).encode()
    if len(body) > _MAX_BODY:
        raise ValueError("boot record too large")
    head = _MAGIC + struct.pack("<H", len(body))
    return head + body + struct.pack("<I", crc32(body, crc32(head)))


def decode(data):
    # bytes -> Record, or None when the copy is torn, corrupt or invalid.
    try:
        if len(data) < 10 or data[:4] != _MAGIC:
            return None
        n = struct.unpack("<H", data[4:6])[0]
        if n > _MAX_BODY or len(data) != n + 10:
            return None
        if struct.unpack("<I", data[6 + n:])[0] != crc32(data[6:6 + n], crc32(data[:6])):
            return None
        d = json.loads(data[6:6 + n])
        rec = Record()
        for k in Record.FIELDS:
            setattr(rec, k, d.get(k) if k in Record.OPTIONAL else d[k])
    except Exception:
        return None
    ok = (isinstance(rec.seq, int) and 0 <= rec.seq <= 0xFFFFFFFF
          and rec.active in _SLOTS and rec.pending in (None, "a", "b")
          and rec.pending != rec.active
          and isinstance(rec.trials, int) and 0 <= rec.trials <= _MAX_TRIALS
          and (rec.confirmed is True or rec.confirmed is False)
          and isinstance(rec.floor, int) and 0 <= rec.floor <= 0xFFFFFFFF
          and _opt_int(rec.pending_sec) and _opt_int(rec.boots) and rec.boots is not None
          and _opt_str(rec.pending_version) and _opt_str(rec.reason)
          and _opt_str(rec.failed_version) and _opt_str(rec.top) and _opt_str(rec.version))
    return rec if ok else None


def newer(a, b):
    # True when sequence number a is newer than b (mod 2**32).
    d = (a - b) & 0xFFFFFFFF
    return 0 < d < 0x80000000


def _read_copy(root, i):
    try:
        with open(root + "bootrec." + str(i), "rb") as f:
            return decode(f.read(_MAX_BODY + 11))
    except OSError:
        return None


def _best(root):
    # (record or None, index of the copy it came from or -1).
    r0 = _read_copy(root, 0)
    r1 = _read_copy(root, 1)
    if r0 is None and r1 is None:
        return None, -1
    if r1 is None or (r0 is not None and not newer(r1.seq, r0.seq)):
        return r0, 0
    return r1, 1


def _write_copy(root, i, rec):
    data = encode(rec)
    with open(root + "bootrec." + str(i), "wb") as f:
        f.write(data)


def write_record(rec, root="/"):
    # Write rec (seq := newest + 1) into the copy NOT holding the newest record.
    root = _root(root)
    cur, idx = _best(root)
    rec.seq = ((cur.seq if cur is not None else 0) + 1) & 0xFFFFFFFF
    _write_copy(root, 1 if idx == 0 else 0, rec)
    return rec


def read_record(root="/"):
    # The current record; a sane default when there is none (not written).
    root = _root(root)
    rec, _ = _best(root)
    if rec is not None:
        return rec
    return _ev().default_record(root)


def drop_evidence(slot, root="/"):
    # before a slot is wiped or sealed: its confirmation marker first, then its evidence
    root = _root(root)
    for ext in (".ok", ".sig"):
        try:
            os.remove(root + "slots/" + slot + ext)
        except OSError:
            pass


def _version(slot, signed, root, m):
    # the version a slot runs: the signed one the record holds (set from the
    # verified image header by the updater), else the slot's bound evidence,
    # else (a sealed deploy, no evidence) the MANIFEST's
    if signed is not None:
        return signed
    try:
        os.stat(root + "slots/" + slot + ".sig")
    except OSError:
        v = m.get("version") if m else None
        return v if _opt_str(v) else None
    return _ev().slot_version(slot, root, m)[0]


def _ev_done():
    # the agent does not keep bootev.py loaded (heap): dropped after each use
    sys.modules.pop("bootev", None)


def _ev():
    # The per-slot evidence module (bootev.py, beside boot.py): compiled only
    # when called, so that its parse tree and boot.py's never peak together.
    import bootev
    return bootev


def _vkey(v):
    out = []
    for part in str(v or "").replace("+", ".").replace("-", ".").split("."):
        n = 0
        for c in part:
            if not "0" <= c <= "9":
                break
            n = n * 10 + ord(c) - 48
        out.append(n)
    return out


# ---- record transitions (the updater's API) ---------------------------------

def set_pending(slot, sec_counter=None, trials=3, version=None, root="/"):
    # After install + verify of `slot`: boot it on trial at the next start.
    root = _root(root)
    rec = read_record(root)
    if slot not in _SLOTS or slot == rec.active:
        raise ValueError("bad pending slot %r (active %r)" % (slot, rec.active))
    if not isinstance(trials, int) or not 1 <= trials <= _MAX_TRIALS:
        raise ValueError("trials must be 1..255")
    if not _opt_int(sec_counter) or not _opt_str(version):
        raise ValueError("bad sec_counter or version")
    if version is None:
        m = read_manifest(slot, root)
        version = m.get("version") if m else None
        if not _opt_str(version):
            version = None
    rec.pending, rec.trials, rec.confirmed = slot, trials, False
    rec.pending_sec, rec.pending_version = sec_counter, version
    rec.reason = rec.failed_version = None
    return write_record(rec, root)


def confirm(root="/", slot=None, version=None):
    # The pending slot passed its health checks: make it active. The ONLY
    # place the security-counter floor is raised. False when nothing pending,
    # or when `slot`/`version` (what actually ran the trial) is not the pending
    # slot and version: a slot that never ran is never confirmed.
    root = _root(root)
    rec = read_record(root)
    if rec.pending is None:
        return False
    if (slot is not None and slot != rec.pending) or \
            (version is not None and rec.pending_version is not None and version != rec.pending_version):
        return False
    new = rec.pending
    rec.active, rec.pending, rec.trials, rec.confirmed = new, None, 0, True
    rec.version = rec.pending_version
    if rec.pending_sec is not None and rec.pending_sec > rec.floor:
        rec.floor = rec.pending_sec
    if rec.pending_version is not None and (rec.top is None or _vkey(rec.pending_version) > _vkey(rec.top)):
        rec.top = rec.pending_version
    rec.pending_sec = rec.pending_version = None
    rec.reason = rec.failed_version = None
    write_record(rec, root)
    return True


def _drop_pending(rec, reason):
    rec.failed_version = rec.pending_version
    rec.reason = reason[:_MAX_REASON] if reason else None
    rec.pending = rec.pending_sec = rec.pending_version = None
    rec.trials, rec.confirmed = 0, True


def rollback(reason, root="/"):
    # Drop the pending slot (active stays), remember why. False when none.
    root = _root(root)
    rec = read_record(root)
    if rec.pending is None:
        return False
    _drop_pending(rec, str(reason))
    write_record(rec, root)
    return True


def clear_pending(root="/"):
    # Forget a pending slot without recording a failure (the updater is about
    # to overwrite it). False when nothing was pending.
    root = _root(root)
    rec = read_record(root)
    if rec.pending is None:
        return False
    rec.pending = rec.pending_sec = rec.pending_version = None
    rec.trials, rec.confirmed = 0, True
    write_record(rec, root)
    return True


def clear_reason(root="/"):
    # The agent reported the last fallback: forget reason/failed_version.
    root = _root(root)
    rec = read_record(root)
    if rec.reason is None and rec.failed_version is None:
        return False
    rec.reason = rec.failed_version = None
    write_record(rec, root)
    return True


# ---- manifest check ---------------------------------------------------------

def read_manifest(slot, root="/"):
    # The slot's MANIFEST as a dict, or None when missing or garbled.
    p = _root(root) + "slots/" + slot + "/MANIFEST"
    try:
        if os.stat(p)[6] > _MAX_MANIFEST:
            return None
        with open(p) as f:
            m = json.load(f)
        if isinstance(m, dict) and isinstance(m.get("files"), dict):
            return m
    except MemoryError:
        raise
    except Exception:
        pass
    return None


def _hexdigest(h):
    return "".join("%02x" % b for b in h.digest())


def _walk(top, rel, files, buf):
    # Every regular file under top must be listed in files; returns count.
    n = 0
    for ent in os.ilistdir(top):
        name, kind = ent[0], ent[1]
        p = rel + name
        if kind == _DIR:
            n += _walk(top + "/" + name, p + "/", files, buf)
        elif p != "MANIFEST":
            if p not in files:
                raise ValueError("extra file " + p)
            n += 1
    return n


def check_slot(slot, root="/", buf=None):
    # (ok, why, manifest): every file listed in the MANIFEST exists with the
    # listed size and SHA-256, and no file is present that is not listed.
    if slot not in _SLOTS:
        return False, "bad slot", None
    base = _root(root) + "slots/" + slot
    m = read_manifest(slot, root)
    if m is None:
        return False, "no manifest", None
    if buf is None:
        buf = bytearray(_BUF)
    mv = memoryview(buf)
    files = m["files"]
    try:
        for path, ent in files.items():
            size, want = ent[0], ent[1]
            if not isinstance(path, str) or not path or path[0] == "/" or ".." in path:
                return False, "bad path", m
            h = hashlib.sha256()
            got = 0
            with open(base + "/" + path, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    got += n
                    if got > size:
                        return False, "size " + path, m
                    h.update(buf if n == len(buf) else mv[:n])
            if got != size:
                return False, "size " + path, m
            if _hexdigest(h) != want:
                return False, "sha256 " + path, m
        if _walk(base, "", files, buf) != len(files):
            return False, "file count", m
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        return False, "files: %s" % e, m
    return True, None, m


def verify_slot(slot, root="/"):
    return check_slot(slot, root)[0]


# ---- slot choice -------------------------------------------------------------

def select(root="/"):
    # Choose the slot to run; returns (slot or None, bootinfo). A pending
    # slot's trial count is decremented and written BEFORE it is returned.
    root = _root(root)
    rec = read_record(root)
    chosen, trial, version, last = None, False, None, False
    if rec.pending is not None:
        if rec.trials <= 0:
            _drop_pending(rec, "trials_exhausted")
        else:
            ok, _, m = check_slot(rec.pending, root)
            if ok:
                rec.trials -= 1
                chosen, trial, version = rec.pending, True, _version(rec.pending, rec.pending_version, root, m)
            else:
                _drop_pending(rec, "manifest_mismatch")
    if chosen is None:
        ok, _, m = check_slot(rec.active, root)
        if ok:
            chosen, version = rec.active, _version(rec.active, rec.version, root, m)
        else:
            o = other(rec.active)
            ok2, _, m2 = check_slot(o, root)
            if ok2:
                v = m.get("version") if m else None
                rec.failed_version = v if _opt_str(v) else None
                why = _ev().fallback_doubt(o, root, rec.floor)
                # last resort (stated, reported): better than no firmware; the floor is kept
                rec.reason = "last_resort: " + why if why else "manifest_mismatch"
                last = why is not None
                rec.active = o
                rec.version = _ev().slot_version(o, root, m2)[0]
                chosen, version = o, rec.version
    rec.boots = (rec.boots + 1) & 0xFFFFFFFF
    try:
        write_record(rec, root)
    except OSError:
        # the trial count cannot be persisted: never run an uncounted trial
        if trial:
            rec.trials += 1
            trial = False
            chosen = rec.active if verify_slot(rec.active, root) else None
            version = None
    info = {"slot": chosen, "trial": trial, "trials": rec.trials,
            "reason": rec.reason, "failed_version": rec.failed_version,
            "version": version, "boots": rec.boots, "root": root, "last_resort": last,
            "floor": rec.floor, "top": rec.top}
    return chosen, info


# ---- running a slot -----------------------------------------------------------

def _purge(path):
    for name in list(sys.modules):
        if name == "firmware" or name.startswith("firmware."):
            del sys.modules[name]
    for p in (path, _ROM):
        while p in sys.path:
            sys.path.remove(p)


def _rom(slot, root, path, info):
    # True when the slot's ROMFS image is mounted at /rom (bootrom.py: only
    # on boards with ROM partitions, dropped after); else the files run
    if getattr(sys.modules.get("_vboard"), "rom_ioctl", None) is None:
        import vfs
        if not hasattr(vfs, "rom_ioctl"):
            return False
    try:
        import bootrom
        ok = bootrom.boot(slot, root, path, info)
    except Exception:  # noqa: a bad ROM never stops a boot
        ok = False
    sys.modules.pop("bootrom", None)
    _ev_done()
    return ok


def _note(root, reason, slot, info):
    # A non-trial start of `slot` failed: record why; when the slot cannot
    # even be imported (every retry) and the other slot verifies and is a plain
    # fallback (not below the floor, not unconfirmed), make the other one active.
    rec = read_record(root)
    rec.reason = reason
    if reason == "import_failed" and rec.active == slot and rec.pending is None \
            and verify_slot(other(slot), root) and _ev().fallback_doubt(other(slot), root, rec.floor) is None:
        rec.active = other(slot)
        rec.version = _ev().slot_version(rec.active, root)[0]
        v = info.get("version")
        rec.failed_version = v if _opt_str(v) else None
    write_record(rec, root)


def main(root="/", run=True):
    # Select a slot, import firmware.agent from it and call agent.run(bootinfo).
    # A failed import or a crash of run() is handled in-process (rollback,
    # fallback) and the choice repeated. Returns the last bootinfo; its 'slot'
    # is None when nothing could be started (safe 'no firmware' state).
    root = _root(root)
    fails = 0
    mem = 0
    info = {"slot": None}
    while fails < _MAX_NONTRIAL_FAILS and mem < _IMPORT_TRIES:
        slot, info = select(root)
        if slot is None:
            break
        path = root + "slots/" + slot
        rom = _rom(slot, root, path, info)
        agent, err = _import(path, rom)
        if agent is None:
            print("boot: slot %s import failed %d times:" % (slot, _IMPORT_TRIES))
            sys.print_exception(err)
            if info["trial"]:
                rollback("import_failed", root)
            elif isinstance(err, MemoryError):
                # transient: nothing persisted, the good slot is never marked failed
                mem += 1
                continue
            else:
                fails += 1
                _note(root, "import_failed", slot, info)
            continue
        _ev_done()            # the agent's heap: bootev.py is not kept loaded
        if not run:
            return info
        try:
            agent.run(info)
            return info
        except Exception as e:
            print("boot: slot %s crashed:" % slot)
            sys.print_exception(e)
            _purge(path)
            if isinstance(e, MemoryError) and not info["trial"]:
                mem += 1          # not persisted: a transient heap shortage
                continue
            if not info["trial"]:
                fails += 1
            _note(root, "crashed", slot, info)
    info["slot"] = None
    if mem >= _IMPORT_TRIES:
        # main.py waits and starts over: a heap shortage never ends in 'no firmware'
        info["transient"] = True
        info["reason"] = "memory"
    return info


def _import(path, rom=False):
    # Import firmware.agent from path (with rom: from the ROMFS image at /rom,
    # the slot's files behind it), _IMPORT_TRIES times (gc between) before
    # giving up: (module, None) or (None, last exception). An import from ROM
    # that fails other than for heap is retried from the files alone.
    import gc
    err = None
    for _ in range(_IMPORT_TRIES):
        _purge(path)
        sys.path.insert(0, path)
        if rom:
            sys.path.insert(0, _ROM)
        try:
            __import__("firmware.agent")
            return sys.modules["firmware.agent"], None
        except Exception as e:
            err = e
            _purge(path)
            if rom and not isinstance(e, MemoryError):
                rom = False
                import vfs
                vfs.umount(_ROM)
            gc.collect()
    return None, err


def idle(info, forever=True, period_s=30):
    # Safe 'no firmware' state: no HAL is loaded, so no relay can close.
    # A transient failure (heap shortage) returns after one period: the caller
    # (main.py) starts over.
    import time
    while True:
        print("boot: no bootable firmware (%s); waiting for service" % (info.get("reason"),))
        if info.get("transient"):
            time.sleep(period_s if forever else 0)
            return
        if not forever:
            return
        time.sleep(period_s)
