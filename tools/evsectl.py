"""evsectl: the host command for evse-agent (release, verify, serve, virtual boards, fleet)."""
import argparse
import sys


def _cmd_keygen(a):
    from tools import keys
    pem, pub, raw = keys.keygen(a.name, force=a.force, key_type=a.type)
    print("signing key : %s  (keep it secret; imgtool-compatible %s PEM)" % (pem, a.type))
    print("public key  : %s  (raw %d bytes; goes into the board's /trust/keys.bin)" % (pub, len(raw)))
    print("key hash    : %s" % keys.keyhash(raw).hex()[:16])
    return 0


def _cmd_release(a):
    from tools import release
    return release.main(a)


def _cmd_verify(a):
    from tools import verify
    return verify.main(a)


def _cmd_certs(a):
    from tools import certs
    return certs.main(a)


def build_parser():
    p = argparse.ArgumentParser(prog="evsectl", description=__doc__)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("keygen", help="create a signing key (Ed25519 or ECDSA P-256) and the raw public key boards trust",
                       description="Write NAME.pem (imgtool-compatible private key) and NAME.pub (raw public "
                                   "key for the board's /trust/keys.bin: 32 bytes for Ed25519, the 65-byte "
                                   "uncompressed point for ECDSA P-256).")
    s.add_argument("name", help="base path, e.g. keys/release")
    s.add_argument("--type", default="ed25519", choices=("ed25519", "ecdsa-p256"),
                   help="key type (default ed25519)")
    s.add_argument("--force", action="store_true", help="overwrite existing files")
    s.set_defaults(fn=_cmd_keygen)

    s = sub.add_parser("release", help="compile, bundle and sign a firmware release (MCUboot image)",
                       description="Compile firmware/ with mpy-cross, bundle and compress it, sign it with "
                                   "imgtool (version, security counter, board TLV 0x00A0); write IMAGE.img "
                                   "and IMAGE.json.")
    s.add_argument("--key", required=True, help="signing key (PEM from `evsectl keygen`, Ed25519 or ECDSA P-256)")
    s.add_argument("--version", required=True, help="MAJOR.MINOR.REVISION[+BUILD]")
    s.add_argument("--board", required=True, help="board id the image is for: sim, esp32 or rp2")
    s.add_argument("--security-counter", type=int, default=None, help="anti-rollback counter (default: the major version)")
    s.add_argument("--src", default="firmware", help="package directory to release (default: firmware)")
    s.add_argument("--out", default="build", help="output directory (default: build)")
    s.add_argument("--no-mpy", action="store_true", help="ship .py sources instead of .mpy bytecode")
    s.add_argument("--no-compress", action="store_true", help="store files uncompressed")
    s.add_argument("--force", action="store_true",
                   help="rebuild an existing release of this version (same key only; never with another key)")
    s.set_defaults(fn=_cmd_release)

    s = sub.add_parser("verify", help="check a signed image the way a board does",
                       description="Run the device's own image verification (inside the MicroPython unix "
                                   "port) on IMAGE against the trusted keys, and print what it found.")
    s.add_argument("image")
    s.add_argument("--key", action="append", required=True, help="trusted key (.pub raw, or PEM); repeatable")
    s.add_argument("--board", default=None, help="expected board id")
    s.set_defaults(fn=_cmd_verify)

    s = sub.add_parser("certs", help="manufacturer root, firmware signing certificate, OCPP file signature",
                       description="Make a manufacturer root CA and firmware signing certificates (ECDSA "
                                   "P-256 or Ed25519) for tests and small fleets, and print or check the "
                                   "OCPP SignedUpdateFirmware signature of a file (ECDSA P-256 over SHA-256, "
                                   "base64).")
    from tools import certs as _certs
    _certs.build_parser(s)
    s.set_defaults(fn=_cmd_certs)

    # listed here for the top-level help; main() hands their arguments to their
    # own parsers (_PASSTHROUGH) before this parser runs
    for name, text in (("serve", "serve release files over HTTP(S) with Range support (development, the demo)"),
                       ("vboard", "run a virtual charger board on the MicroPython unix port"),
                       ("deploy", "put the bootstrap, a signed release, keys and config on a board (mpremote)"),
                       ("rollout", "roll a release out to a fleet in stages over MQTT (start/status/pause/resume/abort/report)"),
                       ("monitor", "live table of the fleet over MQTT"),
                       ("credentials", "per-device MQTT credentials, mosquitto ACL, CA and TLS certificates")):
        sub.add_parser(name, help=text, add_help=False)
    return p


# subcommands whose options are parsed by their own module (argparse would
# refuse a leading option after REMAINDER)
_PASSTHROUGH = {"serve": ("tools.serve", "main"), "vboard": ("tools.vboard", "main"), "deploy": ("tools.deploy", "main"),
                "rollout": ("tools.rollout", "main"), "monitor": ("tools.monitor", "main"),
                "credentials": ("tools.credentials", "main")}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _PASSTHROUGH:
        import importlib
        mod, fn = _PASSTHROUGH[argv[0]]
        return getattr(importlib.import_module(mod), fn)(argv[1:]) or 0
    p = build_parser()
    a = p.parse_args(argv)
    try:
        return a.fn(a) or 0
    except (OSError, ValueError) as e:      # bad input: one line, exit 2 (as argparse)
        sys.stderr.write("evsectl %s: error: %s\n" % (a.cmd, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
