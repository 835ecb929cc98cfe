# Provisioning of a virtual board's flash (MicroPython, unix port), started by
# tools/provision.py:
#
#   micropython provision_fs.py IMG STAGE BLOCK_SIZE BLOCK_COUNT VERSION BOARD
#   micropython provision_fs.py --config IMG JSON     (merge JSON into the configuration)
#   micropython provision_fs.py --put IMG DIR         (copy DIR's tree into the flash)
#
# Creates IMG as erased flash, formats it with MicroPython's own LittleFS
# (VfsLfs2, the driver the board mounts it with), copies the staged tree
# (boot.py, main.py, lib/, trust/, config.json, slots/a/...) into it, seals
# slot a (writes its MANIFEST with slots.seal) and writes the first boot
# record (slot a active, confirmed).
import sys
import os
import vfs

_DIR = 0x4000
_MNT = "/flash"


def _copy_tree(src, dst, buf, atomic=False):
    # atomic: each file written as <name>.tmp, then renamed (an existing flash)
    n = 0
    for ent in os.ilistdir(src):
        name, kind = ent[0], ent[1]
        s, d = src + "/" + name, dst + "/" + name
        if kind == _DIR:
            try:
                os.mkdir(d)
            except OSError:
                pass
            n += _copy_tree(s, d, buf, atomic)
        else:
            out = d + ".tmp" if atomic else d
            with open(s, "rb") as fi, open(out, "wb") as fo:
                while True:
                    k = fi.readinto(buf)
                    if not k:
                        break
                    fo.write(buf if k == len(buf) else memoryview(buf)[:k])
            if atomic:
                os.rename(out, d)
            n += 1
    return n


def _merge(base, over):
    for k in over:
        v = over[k]
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def config(img, text):
    # the installer's write: firmware/config.py validates and stores both copies
    import json
    from firmware import config as cfgmod
    from firmware.hal.simflash import FileBlockDevice
    over = json.loads(text)
    dev = FileBlockDevice(img, 4096)
    vfs.mount(vfs.VfsLfs2(dev, readsize=32, progsize=32, lookahead=32), _MNT)
    try:
        cfg = cfgmod.load(_MNT)
        if cfg.get("fault"):
            raise SystemExit("provision: the image has no valid configuration: " + cfg["fault"])
        _merge(cfg, over)
        err = cfgmod.install(_MNT, cfg)
        if err:
            raise SystemExit("provision: config refused: " + err)
        print(json.dumps(cfgmod.load(_MNT)))
    finally:
        vfs.umount(_MNT)
        dev.close()


def put(img, src):
    # files into an existing flash: each written as .tmp, then renamed
    from firmware.hal.simflash import FileBlockDevice
    dev = FileBlockDevice(img, 4096)
    vfs.mount(vfs.VfsLfs2(dev, readsize=32, progsize=32, lookahead=32), _MNT)
    try:
        _copy_tree(src, _MNT, bytearray(1024), True)
    finally:
        vfs.umount(_MNT)
        dev.close()


def main(argv):
    if len(argv) == 3 and argv[0] == "--config":
        return config(argv[1], argv[2])
    if len(argv) == 3 and argv[0] == "--put":
        return put(argv[1], argv[2])
    if len(argv) != 6:
        raise SystemExit("usage: provision_fs.py IMG STAGE BLOCK_SIZE BLOCK_COUNT VERSION BOARD")
    img, stage, bs, bc, version, board = argv
    bs, bc = int(bs), int(bc)
    from firmware.hal.simflash import FileBlockDevice
    dev = FileBlockDevice(img, bs, bc, create=True)
    vfs.VfsLfs2.mkfs(dev, readsize=32, progsize=32, lookahead=32)
    vfs.mount(vfs.VfsLfs2(dev, readsize=32, progsize=32, lookahead=32), _MNT)
    try:
        n = _copy_tree(stage, _MNT, bytearray(1024))
        import boot
        from firmware.ota import slots
        m = slots.seal("a", version, _MNT + "/", board or None)
        boot.write_record(boot.Record("a"), _MNT + "/")
        ok, why, _ = boot.check_slot("a", _MNT + "/")
        if not ok:
            raise SystemExit("provision: slot a does not verify: %s" % why)
        st = os.statvfs(_MNT)
        print("provisioned %d files, slot a %s (%d files), %d of %d blocks free"
              % (n, version, m["count"], st[3], st[2]))
    finally:
        vfs.umount(_MNT)
        dev.close()


main(sys.argv[1:])
