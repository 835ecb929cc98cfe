"""`evsectl verify IMAGE --key K [--board B]`: the board's own image checks, on the host.

The verification code is the device's (`firmware/ota/image.py`), run inside
the MicroPython unix port, so the host can never accept what a board refuses.
"""
import json
import os
import subprocess
import sys
import tempfile

from tools import keys as keymod
from tools import mpunix


def verify(image_path, key_paths, board=None):
    """Returns the result dict: {"ok": True, "version": [...], ...} or {"ok": False, "error": "..."}."""
    if not os.path.isfile(image_path):
        raise FileNotFoundError("no such image: %s" % image_path)
    raw = [keymod.load_public(k) for k in key_paths]
    with tempfile.NamedTemporaryFile(suffix=".keys", delete=False) as f:
        f.write(b"".join(raw))
        kpath = f.name
    try:
        cmd = mpunix.argv(os.path.join(mpunix.ROOT, "tools", "mp", "verify_image.py"),
                          os.path.abspath(image_path), kpath, board or "", heap="256K")
        p = subprocess.run(cmd, env=mpunix.env(), capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(kpath)
    lines = [line for line in p.stdout.split("\n") if line.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("verifier failed (exit %d): %s" % (p.returncode, (p.stderr or p.stdout).strip()))
    res = json.loads(lines[-1])
    res["keys"] = [keymod.keyhash(k).hex()[:16] for k in raw]
    return res


def main(a):
    res = verify(a.image, a.key, a.board)
    name = os.path.basename(a.image)
    if not res["ok"]:
        print("%s: REJECTED: %s" % (name, res["error"]))
        return 1
    v = res["version"]
    print("%s: OK" % name)
    print("  version          %d.%d.%d+%d" % tuple(v))
    print("  security counter %s" % ("none" if res["security_counter"] is None else res["security_counter"]))
    print("  board            %s" % (res.get("board") or "any"))
    print("  payload          %d bytes (header %d, image %s bytes)" % (
        res["payload_size"], res["header_size"], res.get("total_size")))
    if res.get("key_index") is not None:
        print("  signed by        key %s (%s)" % (res["key_index"] + 1, res["keys"][res["key_index"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
