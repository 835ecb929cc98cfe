# Run by `evsectl verify` inside the MicroPython unix port: the board's own checks.
#   micropython verify_image.py IMAGE KEYSFILE [BOARD]
import sys
import json
from firmware.ota import image


def main():
    path, keys_path = sys.argv[1], sys.argv[2]
    board = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    with open(keys_path, "rb") as f:
        blob = f.read()
    try:
        keys = image.split_keys(blob)   # 32-byte Ed25519 and 65-byte P-256 keys
        with open(path, "rb") as f:
            info = image.verify(f, keys, board=board)
    except image.ImageError as e:
        print(json.dumps({"ok": False, "error": str(e)}))
        return
    print(json.dumps({
        "ok": True,
        "version": list(info.version),
        "security_counter": info.security_counter,
        "header_size": info.header_size,
        "payload_size": info.payload_size,
        "total_size": getattr(info, "total_size", None),
        "board": getattr(info, "board", None),
        "key_index": getattr(info, "key_index", None),
    }))


main()
