# Device side of `evsectl deploy` (tools/deploy.py). Runs ON THE BOARD (real
# or virtual) through mpremote, from the staging directory /_deploy/:
#
#   /_deploy/deploy_install.py   this file
#   /_deploy/args.json           what to do (written by the host)
#   /_deploy/mods/firmware/...   the release's own firmware.ota modules
#                                (bundle, slots, image, ed25519, sha512)
#   /_deploy/root/...            boot.py, main.py, config.json, trust/keys.bin
#                                (and the TLS CA), moved into place by install
#
#   import sys; sys.path.insert(0, '/_deploy'); import deploy_install
#   deploy_install.main('verify')    signature + bundle checks of the staged image
#   deploy_install.main('install')   verify again, move the root files into place,
#                                    slots.install(), boot record: slot active
#
# Prints one JSON line starting with '@@DEPLOY ' (the host parses it):
# {"ok": true, ...} or {"ok": false, "stage": ..., "error": ...}. `stage` says
# how far install got, so the host can tell what state the board is in.
import sys
import os
import json

_DIR = 0x4000
_TMP = "/_deploy"
_BUF = 1024


def _out(d):
    print("@@DEPLOY " + json.dumps(d))


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _rmtree(p):
    try:
        ents = list(os.ilistdir(p))
    except OSError:
        return
    for e in ents:
        q = p + "/" + e[0]
        if e[1] == _DIR:
            _rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)


def _mkdirs(p):
    cur = ""
    for part in p.strip("/").split("/"):
        cur += "/" + part
        if not _exists(cur):
            os.mkdir(cur)


def _replace(src, dst):
    # rename is atomic on LittleFS; FAT refuses to rename over a file
    try:
        os.rename(src, dst)
    except OSError:
        os.remove(dst)
        os.rename(src, dst)


def _fresh_imports():
    # a board interrupted by mpremote `resume` still has the agent's modules
    # (and the old /boot.py) loaded: drop them, take ours from /_deploy/mods
    for k in list(sys.modules):
        if k == "boot" or k == "firmware" or k.startswith("firmware."):
            del sys.modules[k]
    for p in list(sys.path):
        if p.startswith("/slots/") or p.startswith("slots/"):
            sys.path.remove(p)
    mods = _TMP + "/mods"
    while mods in sys.path:
        sys.path.remove(mods)
    sys.path.insert(0, mods)


def _verify(a):
    from firmware.ota import image, bundle
    with open(a["keys"], "rb") as f:
        blob = f.read()
    keys = [blob[i:i + 32] for i in range(0, len(blob), 32)]
    with open(a["image"], "rb") as f:
        info = image.verify(f, keys, board=a["board"])
        if list(info.version) != a["version_tuple"]:
            raise ValueError("image version %r, expected %r" % (info.version, a["version_tuple"]))
        if info.security_counter != a["sec"]:
            raise ValueError("security counter %r, expected %r" % (info.security_counter, a["sec"]))
        f.seek(info.header_size)
        r = bundle.Reader(f, info.payload_size, bytearray(_BUF), a["board"])
        r.check()
    return info, r.meta


def _move_root(a):
    src = _TMP + "/root"
    for rel in a["root_files"]:
        d = rel.rpartition("/")[0]
        if d:
            _mkdirs("/" + d)
        _replace(src + "/" + rel, "/" + rel)
    for p in a.get("remove", ()):
        try:
            os.remove(p)
        except OSError:
            pass


def _install(a, info):
    import boot
    from firmware.ota import slots
    slot = a["slot"]
    rec = boot.read_record("/")
    if rec.active == slot and boot.verify_slot(slot, "/"):
        # deploying over the running slot: slots.install refuses the active
        # slot, so the other one becomes active for the time of the install
        rec.active, rec.pending = boot.other(slot), None
        rec.trials, rec.confirmed = 0, True
        rec.pending_sec = rec.pending_version = None
        boot.write_record(rec, "/")
    m = slots.install(slot, a["image"], info.header_size, info.payload_size, "/", a["board"])
    ok, why, _ = boot.check_slot(slot, "/")
    if not ok:
        raise ValueError("slot %s does not verify after install: %s" % (slot, why))
    return m


def _record(a):
    import boot
    rec = boot.read_record("/")
    rec.active, rec.pending, rec.trials, rec.confirmed = a["slot"], None, 0, True
    rec.pending_sec = rec.pending_version = None
    rec.reason = rec.failed_version = None
    if a["sec"] is not None and a["sec"] > rec.floor:
        rec.floor = a["sec"]
    boot.write_record(rec, "/")
    return boot.read_record("/").as_dict()


def main(mode, args_path=_TMP + "/args.json"):
    stage = "args"
    try:
        with open(args_path) as f:
            a = json.load(f)
        _fresh_imports()
        stage = "verify"
        info, meta = _verify(a)
        res = {"ok": True, "stage": stage, "version": list(info.version),
               "security_counter": info.security_counter, "board": info.board,
               "mpy": meta.get("mpy"), "files": meta.get("files"), "size": meta.get("size")}
        if mode == "verify":
            _out(res)
            return
        stage = "files"
        _move_root(a)
        stage = "slot"
        m = _install(a, info)
        stage = "record"
        res["record"] = _record(a)
        res["manifest"] = {"version": m["version"], "count": m["count"], "size": m["size"]}
        stage = "cleanup"
        try:
            os.remove(a["image"])
        except OSError:
            pass
        _rmtree(_TMP)
        res["stage"] = "done"
        _out(res)
    except Exception as e:
        _out({"ok": False, "stage": stage, "error": "%s: %s" % (type(e).__name__, e)})
