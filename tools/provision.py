"""Create the flash image of a virtual board (CPython side).

The image is a LittleFS file system written by MicroPython's own VfsLfs2 (the
driver the board mounts it with): this module stages the files on the host
and runs tools/mp/provision_fs.py in the unix port, which formats the image,
copies the tree and seals slot a. Layout on the flash:

    /boot.py /main.py      the bootstrap (repo root)
    /lib/                  third-party libraries (repo lib/, e.g. umqtt)
    /trust/keys.bin        trusted raw Ed25519 public keys, concatenated
    /config.json           device configuration, with its checksummed twin
    /config.bak            (format: firmware/config.py, docs/security.md)
    /slots/a/firmware/...  the agent package (+ MANIFEST), /bootrec.0|1

    python -m tools.provision IMG --id vb1 [--broker HOST:PORT] [--key K.pub] [--no-mpy]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

from tools import mpunix, release

ROOT = mpunix.ROOT
BLOCK_SIZE = 4096
BLOCK_COUNT = 512          # 2 MiB, like a small ESP32 data partition
DEFAULT_VERSION = "0.1.0"


def blank(image, block_size=BLOCK_SIZE, block_count=BLOCK_COUNT):
    """An empty LittleFS image: what a board holds right after MicroPython was
    flashed (formatted by the unix port's own VfsLfs2, as a board formats it)."""
    code = ("import vfs\nfrom firmware.hal.simflash import FileBlockDevice\n"
            "dev = FileBlockDevice(%r, %d, %d, create=True)\n"
            "vfs.VfsLfs2.mkfs(dev, readsize=32, progsize=32, lookahead=32)\ndev.close()\n"
            % (image, block_size, block_count))
    subprocess.run([mpunix.binary(), "-X", "heapsize=1M", "-c", code], env=mpunix.env(),
                   check=True, capture_output=True, timeout=60)


def default_config(device_id, board="sim", broker=None):
    cfg = {"device_id": device_id, "board": board, "max_current_a": 32,
           "fallback_current_a": 6, "ventilation": False, "require_auth": False,
           "telemetry_ms": 10000}
    if broker:
        host, port = parse_hostport(broker)
        cfg["mqtt"] = {"host": host, "port": port}
    return cfg


CONFIG_FILES = ("config.json", "config.bak")
_SEQ_MASK = 0x3FFFFFFF


def config_file(cfg, seq=1):
    """The protected configuration file firmware/config.py reads: the JSON
    object with "_seq" and a CRC-32 of every byte before the "_crc" member.
    Any JSON spelling works (the checksum covers the bytes as written)."""
    cfg = {k: v for k, v in cfg.items() if k not in ("_seq", "_crc", "fault")}
    if not cfg:
        raise ValueError("config must not be empty")
    head = json.dumps(cfg)[:-1] + ',"_seq":%d' % (seq & _SEQ_MASK)
    return (head + ',"_crc":"%08x"}' % (zlib.crc32(head.encode()) & 0xFFFFFFFF)).encode()


def write_config(dirpath, cfg, seq=1):
    """Both copies (config.json, config.bak) of cfg into dirpath."""
    data = config_file(cfg, seq)
    for name in CONFIG_FILES:
        with open(os.path.join(dirpath, name), "wb") as f:
            f.write(data)


def parse_hostport(text, default_port=1883):
    host, sep, port = str(text).rpartition(":")
    if not sep:
        return str(text), default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("bad HOST:PORT %r" % (text,))
    return host, int(port)


def _merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def read_keys(paths):
    """Raw 32-byte keys from .pub / PEM files (tools.keys.load_public)."""
    from tools import keys
    return b"".join(keys.load_public(p) for p in paths)


def _put(dirpath, files):
    for rel, data in (files or {}).items():
        p = os.path.join(dirpath, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


def stage(dirpath, device_id, board="sim", broker=None, config=None, keys=(), mpy=True,
          src=None, lib=None, files=None):
    """Write the tree that goes onto the flash into dirpath. files: {path on
    the flash: bytes} written beside it (e.g. a CA certificate for ocpp.ca)."""
    for name in ("boot.py", "bootev.py", "bootrom.py", "main.py"):
        shutil.copy2(os.path.join(ROOT, name), os.path.join(dirpath, name))
    libsrc = lib or os.path.join(ROOT, "lib")
    if os.path.isdir(libsrc):
        release.compile_tree(libsrc, dirpath, mpy)
    else:
        os.makedirs(os.path.join(dirpath, "lib"))
    release.compile_tree(src or os.path.join(ROOT, "firmware"),
                         os.path.join(dirpath, "slots", "a"), mpy)
    os.makedirs(os.path.join(dirpath, "trust"))
    with open(os.path.join(dirpath, "trust", "keys.bin"), "wb") as f:
        f.write(keys if isinstance(keys, (bytes, bytearray)) else read_keys(keys))
    cfg = _merge(default_config(device_id, board, broker), config)
    write_config(dirpath, cfg)
    for rel, data in (files or {}).items():
        p = os.path.join(dirpath, rel.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    return cfg


def provision(image, device_id, board="sim", broker=None, config=None, keys=(),
              version=DEFAULT_VERSION, mpy=True, block_size=BLOCK_SIZE,
              block_count=BLOCK_COUNT, src=None, lib=None, files=None):
    """Create (or overwrite) the flash image `image`. Returns the config written.
    `keys`: raw key bytes, or paths of key files. `config`: overrides merged
    into the default configuration."""
    if not device_id or not isinstance(device_id, str):
        raise ValueError("device id must be a non-empty string")
    with tempfile.TemporaryDirectory(prefix="vboard-stage-") as tmp:
        cfg = stage(tmp, device_id, board, broker, config, keys, mpy, src, lib, files)
        tmpimg = image + ".new"
        cmd = mpunix.argv(os.path.join(ROOT, "tools", "mp", "provision_fs.py"), tmpimg, tmp,
                          str(block_size), str(block_count), version, board, heap="2M")
        p = subprocess.run(cmd, env=mpunix.env(), capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("provisioning failed (exit %d):\n%s%s" % (p.returncode, p.stdout, p.stderr))
        os.replace(tmpimg, image)
    return cfg


def put_files(image, files):
    """Write {path on the flash: bytes} into an existing flash image (new
    file, then rename, on the LittleFS)."""
    with tempfile.TemporaryDirectory(prefix="vboard-put-") as tmp:
        _put(tmp, files)
        cmd = mpunix.argv(os.path.join(ROOT, "tools", "mp", "provision_fs.py"), "--put", image, tmp,
                          heap="1M")
        p = subprocess.run(cmd, env=mpunix.env(), capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("writing files failed (exit %d):\n%s%s" % (p.returncode, p.stdout, p.stderr))


def update_config(image, changes):
    """Merge `changes` into the configuration of an existing flash image
    (firmware/config.py install(): validated, both copies, atomic renames on
    the LittleFS). Returns the resulting configuration."""
    cmd = mpunix.argv(os.path.join(ROOT, "tools", "mp", "provision_fs.py"), "--config", image,
                      json.dumps(changes), heap="1M")
    p = subprocess.run(cmd, env=mpunix.env(), capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("config update failed (exit %d):\n%s%s" % (p.returncode, p.stdout, p.stderr))
    return json.loads(p.stdout.strip().split("\n")[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.provision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--id", required=True, help="device id")
    ap.add_argument("--board", default="sim")
    ap.add_argument("--broker", default=None, help="MQTT broker HOST:PORT")
    ap.add_argument("--key", action="append", default=[], help="trusted public key file (repeatable)")
    ap.add_argument("--version", default=DEFAULT_VERSION, help="version of the firmware in slot a")
    ap.add_argument("--config", default=None, help="JSON object merged into the configuration")
    ap.add_argument("--no-mpy", action="store_true", help="copy .py sources instead of .mpy")
    a = ap.parse_args(argv)
    cfg = provision(a.image, a.id, a.board, a.broker, json.loads(a.config) if a.config else None,
                    a.key, a.version, not a.no_mpy)
    print("wrote %s for %s" % (a.image, cfg["device_id"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
