"""`evsectl deploy`: put the bootstrap, lib/, trusted keys, config and a signed
release on a board with mpremote (a board on USB or a virtual board's pty).

    evsectl deploy --port /dev/ttyUSB0 --release build/evse-esp32-1.0.0.json \\
        --key-pub keys/release.pub --id cp-0042 --broker 10.0.0.5:1883

Steps (docs/deploy.md):
 1. host checks: lib/ present (`make deps`), trusted keys, the release verified
    by the device's own code in the unix port (tools/verify.py), its bundle
    read (version, board, .mpy version);
 2. probe the board over mpremote: bytecode version (sys.implementation._mpy),
    platform, /config.json, boot record, files and free space;
 3. REFUSE before anything is written: another board id, another .mpy
    version, a security counter below the board's floor, no space, a bad
    config (validated by firmware/config.py in the unix port);
 4. stage in /_deploy on the board: the release's own firmware.ota modules,
    the root files (boot.py, main.py, config.json, trust/keys.bin), the image
    as /slots/<x>.img; verify it there with the device code;
 5. copy lib/; move the root files into place; slots.install() into the
    slot; boot record: that slot active, confirmed; remove the staging files;
 6. print the board's files, soft-reset it so that it boots the new slot.

Board id precedence: --board, else "board" of the board's /config.json; with
neither, deploy refuses. Config precedence (later wins): the board's current
/config.json (unless --reset-config), --config FILE, the options (--id,
--board, --broker, --user, --password, --tls-ca).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from tools import bundle as hostbundle
from tools import keys as keymod
from tools import mpunix, verify
from tools.mpunix import mpy_cross

ROOT = mpunix.ROOT
TMP = "/_deploy"
DEVICE_SCRIPT = os.path.join(ROOT, "tools", "mp", "deploy_install.py")
# the modules the board needs to verify and install a release (from the release itself)
OTA_MODULES = ("firmware/__init__", "firmware/ota/__init__", "firmware/ota/bundle",
               "firmware/ota/slots", "firmware/ota/image", "firmware/ota/ed25519",
               "firmware/ota/wnaf", "firmware/ota/sha512", "firmware/ota/job")
BOARDS = ("sim", "esp32", "rp2")           # as firmware/config.py accepts
_PLATFORMS = {"esp32": ("esp32",), "rp2": ("rp2",)}
_MARK = "@@DEPLOY "
_MARGIN = 16 * 1024                        # free flash kept beyond what the deploy needs


class DeployError(Exception):
    """A refusal or a failure; `state` tells what the board is left with."""

    def __init__(self, msg, state="nothing was written: the board is unchanged"):
        Exception.__init__(self, msg)
        self.state = state


# ---- small helpers (pure; unit-tested) ---------------------------------------

def mpy_compatible(release_mpy, board_mpy):
    """As firmware/ota/bundle.py: version byte always, sub-version only when
    the release's is nonzero (bytecode-only .mpy carry 0). release_mpy is
    [version, sub] or None (.py sources); board_mpy is sys.implementation._mpy."""
    if release_mpy is None:
        return True
    if board_mpy is None:
        return False
    v, sub = release_mpy
    return v == board_mpy & 0xFF and (not sub or sub == (board_mpy >> 8) & 3)


def mpy_text(board_mpy):
    return "v%d.%d" % (board_mpy & 0xFF, (board_mpy >> 8) & 3) if board_mpy is not None else "unknown"


def board_id(cli_board, board_config):
    """(board id, where it came from) or (None, why not). --board wins over the
    board's /config.json."""
    if cli_board:
        return cli_board, "--board"
    if isinstance(board_config, dict) and isinstance(board_config.get("board"), str):
        return board_config["board"], "/config.json on the board"
    return None, "no --board given and the board has no /config.json with a board id"


def merge(base, over):
    """`over` on top of `base`; nested objects (mqtt, health) key by key."""
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build_config(existing, extra, device_id, board, broker=None, user=None, password=None,
                 ca_path=None, ocpp_url=None, ocpp_auth_key=None):
    """The /config.json to write: existing < extra (--config) < options."""
    from tools.provision import parse_hostport
    cfg = merge(existing or {}, extra or {})
    opts = {"device_id": device_id, "board": board}
    mq = {}
    if broker:
        mq["host"], mq["port"] = parse_hostport(broker)
    if user is not None:
        mq["user"] = user
    if password is not None:
        mq["password"] = password
    if ca_path:
        mq["tls"], mq["ca"] = True, ca_path
    if mq:
        opts["mqtt"] = mq
    oc = {}
    if ocpp_url:
        oc["url"] = ocpp_url
    if ocpp_auth_key is not None:
        oc["auth_key"] = ocpp_auth_key
    if oc:
        opts["ocpp"] = oc
    return merge(cfg, opts)


def validate_config(cfg):
    """Run firmware/config.py's validate() on cfg inside the unix port.
    Returns None or the error text."""
    code = ("import json\nfrom firmware import config\n"
            "print('@@CFG ' + json.dumps(config.validate(json.loads(%r))))\n" % json.dumps(cfg))
    p = subprocess.run([mpunix.binary(), "-X", "heapsize=256K", "-c", code], env=mpunix.env(),
                       capture_output=True, text=True, timeout=60)
    for line in p.stdout.splitlines():
        if line.startswith("@@CFG "):
            return json.loads(line[6:])
    raise RuntimeError("config validation failed to run: %s" % (p.stderr or p.stdout).strip())


def mpremote_path():
    cand = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return cand if os.path.exists(cand) else (shutil.which("mpremote") or "mpremote")


def _size(n):
    return "%d B" % n if n < 10240 else "%.1f KiB" % (n / 1024.0)


# ---- the release -------------------------------------------------------------

class Release:
    """A signed release (.img, or the .json written beside it), checked on
    the host with the device's verifier and its bundle read."""

    def __init__(self, path, key_paths):
        self.path = path
        if not os.path.isfile(path):
            raise DeployError("no such release: %s" % path)
        self.desc = None
        if path.endswith(".json"):
            try:
                with open(path) as f:
                    self.desc = json.load(f)
                self.image = os.path.join(os.path.dirname(path), self.desc["image"])
            except (ValueError, KeyError, TypeError) as e:
                raise DeployError("%s is not a release description (%s)" % (path, e))
        else:
            self.image = path
        if not os.path.isfile(self.image):
            raise DeployError("the release image %s is missing" % self.image)
        with open(self.image, "rb") as f:
            self.data = f.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        res = verify.verify(self.image, key_paths)
        if not res["ok"]:
            raise DeployError("REFUSED: %s does not verify against the trusted key(s) %s: %s\n"
                              "  (a tampered or truncated image, or signed with another key: "
                              "rebuild it with `evsectl release`, or pass the right --key-pub)"
                              % (os.path.basename(self.image), ", ".join(res["keys"]), res["error"]))
        self.info = res
        self.version_tuple = list(res["version"])
        self.security_counter = res["security_counter"]
        self.board = res.get("board")
        hs, ps = res["header_size"], res["payload_size"]
        try:
            self.meta, self.files = hostbundle.read(self.data[hs:hs + ps])
        except Exception as e:
            raise DeployError("REFUSED: the release's bundle is unreadable: %s" % e)
        self.version = self.meta["version"]
        self.mpy = self.meta.get("mpy")
        if self.meta.get("board") not in (None, self.board):
            raise DeployError("REFUSED: the bundle says board %r, the signed header %r"
                              % (self.meta.get("board"), self.board))
        if self.desc is not None:
            for k, want in (("sha256", self.sha256), ("version", self.version),
                            ("board", self.board), ("mpy", self.mpy)):
                if k in self.desc and self.desc[k] != want:
                    raise DeployError("REFUSED: %s says %s %r but the image has %r "
                                      "(description and image do not belong together)"
                                      % (os.path.basename(path), k, self.desc[k], want))

    def ota_modules(self):
        """{board path: bytes} of the release's own firmware.ota modules (the
        code that verifies and installs it on the board), or None when the
        release does not carry all of them."""
        have = dict(self.files)
        out = {}
        for m in OTA_MODULES:
            for ext in (".mpy", ".py"):
                if m + ext in have:
                    out[m + ext] = have[m + ext]
                    break
            else:
                return None
        return out


# ---- the board (mpremote) ------------------------------------------------------

_PROBE = r"""
import sys, os, json
def _ls(p, out):
    try:
        ents = list(os.ilistdir(p))
    except OSError:
        return
    for e in ents:
        q = (p.rstrip('/') + '/' + e[0])
        if e[1] == 0x4000:
            out.append([q + '/', -1])
            _ls(q, out)
        else:
            out.append([q, os.stat(q)[6]])
r = {'mpy': getattr(sys.implementation, '_mpy', None), 'platform': sys.platform,
     'version': list(sys.implementation.version[:3])}
files = []
_ls('/', files)
r['files'] = files
# what the Ctrl-C of mpremote interrupted: the bootstrap (main.py imports boot)
# and, when an agent ran, its charging session at that moment
# (a virtual board's REPL is a new process: its ROM passes that on as _vboard.interrupted)
r['interrupted'] = 'boot' in sys.modules
r['session'] = None
try:
    _a = getattr(sys.modules.get('firmware.agent'), 'current', None)
    if _a is not None:
        r['session'] = _a.evse.session
    _n = getattr(sys.modules.get('_vboard'), 'interrupted', None)
    if _n:
        r['interrupted'] = True
        r['session'] = r['session'] or _n.get('session')
except Exception:
    pass
try:
    st = os.statvfs('/')
    r['free'] = st[0] * st[4]
except Exception:
    r['free'] = None
r['config_seq'] = 0
r['config'] = None
import binascii
for _n in ('/config.bak', '/config.json'):
    # checksummed copies (firmware/config.py): a copy that fails its CRC is not used
    try:
        with open(_n, 'rb') as f:
            _b = f.read()
        if b'"_crc"' in _b:
            _h = _b[:-19]
            if _b[-19:-10] != b',"_crc":"' or _b[-2:] != b'"}' or \
                    ('%08x' % (binascii.crc32(_h) & 0xFFFFFFFF)).encode() != _b[-10:-2]:
                raise ValueError(_n + ': checksum mismatch')
        _c = json.loads(_b)
        if type(_c) is not dict:
            raise ValueError(_n + ': not an object')
        _s = _c.pop('_seq', 0)
        _c.pop('_crc', None)
        if type(_s) is int and _s >= r['config_seq']:
            r['config_seq'] = _s
            r['config'] = _c
            r.pop('config_error', None)
    except OSError:
        pass
    except Exception as e:
        if r['config'] is None:
            r['config_error'] = repr(e)
try:
    os.stat('/boot.py')
    import boot
    r['record'] = boot.read_record('/').as_dict()
    r['slots'] = {}
    for s in ('a', 'b'):
        ok, why, m = boot.check_slot(s, '/')
        r['slots'][s] = {'ok': ok, 'why': why, 'version': (m or {}).get('version')}
except Exception as e:
    r['record'] = None
    r['record_error'] = repr(e)
print('@@PROBE ' + json.dumps(r))
"""


class Board:
    """mpremote against one port, always with `resume` (no soft reset: also
    works on a virtual board's pty)."""

    def __init__(self, port, mpremote=None, timeout=120):
        self.port = port
        self.mpremote = mpremote or mpremote_path()
        self.timeout = timeout

    def run(self, *args, check=True):
        cmd = [self.mpremote, "connect", self.port, "resume"] + list(args)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise DeployError("mpremote timed out after %ds on %s" % (self.timeout, self.port),
                              state="unknown: the board did not answer")
        if check and p.returncode != 0:
            raise DeployError("mpremote %s failed (exit %d): %s" % (
                args[0] if args else "", p.returncode, (p.stderr or p.stdout).strip()[-800:]),
                state="unknown")
        return p.stdout

    def exec(self, code):
        return self.run("exec", code)

    def probe(self):
        out = self.exec(_PROBE)
        for line in out.splitlines():
            if line.startswith("@@PROBE "):
                return json.loads(line[8:])
        raise DeployError("cannot read the board on %s: %s" % (self.port, out.strip()[-800:]))

    def soft_reset(self):
        """Leave the raw REPL and soft-reset from the friendly REPL: the board
        runs boot.py and main.py again (a virtual board boots again too)."""
        import serial   # pyserial, mpremote's own dependency; opened the way mpremote does
        with serial.serial_for_url(self.port, baudrate=115200, timeout=0.2, exclusive=True) as s:
            s.write(b"\r\x03\x03\x02")
            time.sleep(0.3)
            s.read(4096)
            s.write(b"\x04")
            s.flush()
            time.sleep(0.2)


# ---- deploy ----------------------------------------------------------------------

def _lib_files(lib_dir):
    """[(relative path, host path)] of the third-party libraries, or []."""
    out = []
    if not os.path.isdir(lib_dir):
        return out
    for dirpath, dirs, files in os.walk(lib_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for fn in sorted(files):
            if fn.endswith(".py") or fn.endswith(".mpy"):
                host = os.path.join(dirpath, fn)
                out.append((os.path.relpath(host, lib_dir).replace(os.sep, "/"), host))
    return out


def _hostmpy():
    """mpy version emitted by the host mpy-cross, as sys.implementation._mpy's low byte."""
    try:
        p = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True, timeout=20)
    except OSError:
        return None
    t = p.stdout
    i = t.find("mpy v")
    if i < 0:
        return None
    try:
        return int(t[i + 5:].split(".")[0])
    except ValueError:
        return None


def _stage_lib(lib_dir, stage, board_mpy, log):
    """Copy lib/ into stage/lib, compiled to .mpy when the host's mpy-cross
    emits the board's bytecode version (less heap on the board), else as .py.
    Returns ([(board path, size)], [stale board paths to remove])."""
    files = _lib_files(lib_dir)
    hv = _hostmpy()
    compile_ = board_mpy is not None and hv is not None and hv == board_mpy & 0xFF
    out, stale = [], []
    for rel, host in files:
        dst = os.path.join(stage, "lib", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if compile_ and rel.endswith(".py"):
            dst = dst[:-3] + ".mpy"
            subprocess.run([mpy_cross(), "-s", rel, "-o", dst, host], check=True, capture_output=True)
            out.append(("/lib/" + rel[:-3] + ".mpy", os.path.getsize(dst)))
            stale.append("/lib/" + rel)
        else:
            shutil.copyfile(host, dst)
            out.append(("/lib/" + rel, os.path.getsize(dst)))
            if rel.endswith(".py"):
                stale.append("/lib/" + rel[:-3] + ".mpy")
    log("      lib/ as %s" % ("bytecode (mpy-cross v%d)" % hv if compile_ else ".py sources"))
    return out, stale


UNCHANGED = ("nothing was written", "unchanged")
RESTARTED = "the agent it interrupted was restarted (soft reset)"


def deploy(port, release, key_pubs, device_id, board=None, broker=None, user=None,
           password=None, tls_ca=None, config=None, slot=None, dry_run=False, yes=True,
           reset=True, reset_config=False, lib_dir=None, log=print, mpremote=None, force=False,
           ocpp=None, ocpp_auth_key=None, ocpp_mfr_root=None):
    """Deploy `release` (.json or .img) to the board on `port`. Returns a dict
    (plan and result). Raises DeployError (message + .state) on refusal/failure.

    The probe (mpremote) interrupts the running agent; a deploy that writes
    nothing (--dry-run, every refusal, a cancelled prompt) soft-resets the
    board so that the agent runs again, and says so (result "restarted",
    DeployError.state). A charging session running on the board is refused
    unless force."""
    ctx = {}
    try:
        r = _deploy(ctx, port, release, key_pubs, device_id, board, broker, user, password, tls_ca,
                    config, slot, dry_run, yes, reset, reset_config, lib_dir, log, mpremote, force,
                    ocpp, ocpp_auth_key, ocpp_mfr_root)
    except DeployError as e:
        if ctx.get("interrupted") and e.state.startswith(UNCHANGED):
            e.state += "; " + _restart(ctx["board"], log)
        raise
    except BaseException:
        if ctx.get("interrupted") and not ctx.get("written"):
            _restart(ctx["board"], log)
        raise
    if r.get("dry_run") and ctx.get("interrupted"):
        r["restarted"] = _restart(ctx["board"], log) == RESTARTED
    return r


def _restart(b, log):
    try:
        b.soft_reset()
    except Exception as e:     # noqa: BLE001 - the refusal is reported; this says what is left
        msg = "the agent it interrupted could NOT be restarted (%s): reset the board" % e
    else:
        msg = RESTARTED
    log("      " + msg)
    return msg


def _deploy(ctx, port, release, key_pubs, device_id, board, broker, user, password, tls_ca, config,
            slot, dry_run, yes, reset, reset_config, lib_dir, log, mpremote, force, ocpp, ocpp_auth_key,
            ocpp_mfr_root=None):
    lib_dir = lib_dir or os.path.join(ROOT, "lib")
    n_steps = 6
    step = [0]

    def head(text):
        step[0] += 1
        log("[%d/%d] %s" % (step[0], n_steps, text))

    # ---- 1. host checks
    head("host checks")
    libs = _lib_files(lib_dir)
    if not any(r.startswith("umqtt/") for r, _ in libs):
        raise DeployError("REFUSED: %s has no umqtt (the MQTT client the agent needs): "
                          "run `make deps` first" % lib_dir)
    if not key_pubs:
        raise DeployError("REFUSED: no trusted key: pass --key-pub keys/release.pub")
    if len(key_pubs) > 16:
        raise DeployError("REFUSED: at most 16 trusted keys")
    try:
        raw_keys = [keymod.load_public(k) for k in key_pubs]
    except (OSError, ValueError) as e:
        raise DeployError("REFUSED: bad trusted key: %s" % e)
    uniq = []
    for k, raw in zip(key_pubs, raw_keys):
        dup = raw in uniq
        log("      trusted key %s (%s)%s" % (k, keymod.keyhash(raw).hex()[:16],
                                           "  duplicate: written once" if dup else ""))
        if not dup:
            uniq.append(raw)
    raw_keys = uniq
    if slot not in (None, "a", "b"):
        raise DeployError("REFUSED: --slot must be a or b")
    if tls_ca and not os.path.isfile(tls_ca):
        raise DeployError("REFUSED: no such CA file: %s" % tls_ca)
    mfr_root = None
    if ocpp_mfr_root:
        # the OCPP Manufacturer root, in firmware/ocpp/certstore.py's format
        from tools import certs
        try:
            mfr_root = certs.certstore_file(ocpp_mfr_root)
        except (OSError, ValueError) as e:
            raise DeployError("REFUSED: --ocpp-mfr-root: %s" % e)
        log("      OCPP Manufacturer root %s -> /%s" % (ocpp_mfr_root, certs.MFR_ROOT_PATH))
    extra = None
    if config:
        try:
            with open(config) as f:
                extra = json.load(f)
        except (OSError, ValueError) as e:
            raise DeployError("REFUSED: --config %s: %s" % (config, e))
        if not isinstance(extra, dict):
            raise DeployError("REFUSED: --config %s must hold a JSON object" % config)
    rel = Release(release, key_pubs)
    log("      release %s for board %s: %d bytes, sha256 %s, signature OK (device verifier)"
        % (rel.version, rel.board, len(rel.data), rel.sha256[:16]))
    log("      bundle: %d files, %d bytes unpacked, bytecode %s, security counter %s"
        % (rel.meta["files"], rel.meta["size"],
           "mpy v%d.%d" % tuple(rel.mpy) if rel.mpy else ".py sources", rel.security_counter))

    # ---- 2. the board
    head("probe the board on %s (mpremote)" % port)
    b = Board(port, mpremote)
    ctx["board"] = b
    pr = b.probe()
    ctx["interrupted"] = bool(pr.get("interrupted"))
    log("      MicroPython %s on %s, bytecode %s, %s free" % (
        ".".join(str(x) for x in pr["version"]), pr["platform"], mpy_text(pr["mpy"]),
        _size(pr["free"]) if pr["free"] is not None else "? bytes"))
    cur = pr.get("config")
    if pr.get("config_error"):
        log("      /config.json on the board is unreadable (%s): ignored" % pr["config_error"])
    rec = pr.get("record")
    if rec:
        sl = pr.get("slots") or {}
        log("      boot record: active %s%s, floor %s; slot a: %s; slot b: %s" % (
            rec["active"], ", pending %s" % rec["pending"] if rec["pending"] else "", rec["floor"],
            *["%s%s" % (sl.get(s, {}).get("version") or "-",
                        "" if sl.get(s, {}).get("ok") else " (not bootable)") for s in "ab"]))
    else:
        log("      no bootstrap on the board yet (empty or foreign filesystem)")

    # ---- 3. refusals
    head("checks against the board")
    sess = pr.get("session")
    if isinstance(sess, dict):
        what = "a charging session is running (session %s, %s Wh)" % (sess.get("id"), sess.get("energy_wh"))
        if not force:
            raise DeployError("REFUSED: %s: a deploy resets the board and ends it. Deploy when the "
                              "session is over, or pass --force" % what)
        log("      %s: --force, the deploy ends it" % what)
    bid, src = board_id(board, cur)
    if bid is None:
        raise DeployError("REFUSED: the board id is unknown: %s. Pass --board (one of %s)"
                          % (src, ", ".join(BOARDS)))
    log("      board id %s (from %s; precedence: --board, then the board's /config.json)" % (bid, src))
    if board and isinstance(cur, dict) and cur.get("board") not in (None, board):
        log("      note: the board's /config.json says board %r; it becomes %r" % (cur.get("board"), board))
    if rel.board != bid:
        raise DeployError("REFUSED: the release is for board %r, this board is %r (from %s).\n"
                          "  Build one for it: evsectl release --board %s ..., or pass the right "
                          "--board" % (rel.board, bid, src, bid))
    plats = _PLATFORMS.get(bid)
    if plats and pr["platform"] not in plats or (bid == "sim" and pr["platform"] in ("esp32", "rp2")):
        raise DeployError("REFUSED: board id %r does not fit this hardware (sys.platform %r)"
                          % (bid, pr["platform"]))
    if not mpy_compatible(rel.mpy, pr["mpy"]):
        raise DeployError(
            "REFUSED: the release holds .mpy bytecode %s, the board's MicroPython runs %s "
            "(sys.implementation._mpy = %s).\n  Rebuild the release with an mpy-cross of the "
            "board's version, or flash the matching MicroPython (docs/deploy.md)"
            % ("v%d.%d" % tuple(rel.mpy), mpy_text(pr["mpy"]), pr["mpy"]))
    log("      bytecode: release %s, board %s: compatible" % (
        "v%d.%d" % tuple(rel.mpy) if rel.mpy else ".py", mpy_text(pr["mpy"])))
    floor = rec["floor"] if rec else 0
    if floor and (rel.security_counter or 0) < floor:
        raise DeployError("REFUSED: the release's security counter %s is below the board's "
                          "anti-rollback floor %d: it is older than what the board already ran"
                          % (rel.security_counter, floor))
    if slot is None:
        sl = pr.get("slots") or {}
        if rec and sl.get(rec["active"], {}).get("ok"):
            slot = "b" if rec["active"] == "a" else "a"
            log("      slot %s (the inactive one; slot %s with %s stays as the fallback)"
                % (slot, rec["active"], sl[rec["active"]].get("version")))
        else:
            slot = "a"
            log("      slot a (no bootable slot on the board)")
    else:
        log("      slot %s (--slot)" % slot)
    ca_board = None
    if tls_ca:
        ca_board = "/trust/ca" + (".der" if tls_ca.endswith(".der") else ".pem")
    base = {} if reset_config or not isinstance(cur, dict) else cur
    if not base:
        # the board keeps no built-in defaults (it fails closed without a valid
        # configuration): the installer template is written out in full
        from tools import provision
        base = provision.default_config(device_id, bid)
        log("      no valid configuration on the board: installer template (rating %s A; "
            "change it with --config)" % base["max_current_a"])
    cfg = build_config(base, extra, device_id, bid, broker, user, password, ca_board,
                       ocpp, ocpp_auth_key)
    err = validate_config(cfg)
    if err:
        raise DeployError("REFUSED: config: %s (rules of firmware/config.py; the config is the "
                          "board's /config.json%s%s, then the options)" % (
                              err, " (ignored: --reset-config)" if reset_config else "",
                              ", then --config" if config else ""))
    shown = merge(cfg, {"mqtt": {"password": "***"}}) if (cfg.get("mqtt") or {}).get("password") else cfg
    log("      config %s" % json.dumps(shown, sort_keys=True))

    # space: the image + the unpacked slot + staging, minus what the deploy replaces
    files = {p: s for p, s in pr["files"]}
    pre = "/slots/%s/" % slot
    freed = sum(s for p, s in files.items() if p.startswith(pre) and s > 0)
    freed += max(0, files.get("/slots/%s.img" % slot, 0))
    mods = rel.ota_modules()
    if mods is None:
        raise DeployError("REFUSED: the release does not carry firmware/ota (%s): "
                          "it cannot install itself" % ", ".join(OTA_MODULES))
    need = len(rel.data) + rel.meta["size"] + sum(len(v) for v in mods.values()) + _MARGIN
    if pr["free"] is not None and pr["free"] + freed < need:
        raise DeployError("REFUSED: not enough flash: %s needed, %s free (+%s freed by the deploy)"
                          % (_size(need), _size(pr["free"]), _size(freed)))

    plan = {"port": port, "board": bid, "board_source": src, "slot": slot, "release": rel.version,
            "config": cfg, "mpy": pr["mpy"]}
    if dry_run:
        log("dry run: nothing written.")
        if ctx["interrupted"]:
            log("      restarting the agent the probe interrupted")
        return dict(plan, ok=True, dry_run=True)
    if not yes:
        if not sys.stdin.isatty():
            raise DeployError("REFUSED: not confirmed: pass --yes (no terminal to ask on)")
        ans = input("Deploy %s to %s (slot %s)? [y/N] " % (rel.version, port, slot))
        if ans.strip().lower() not in ("y", "yes"):
            raise DeployError("cancelled")

    # ---- 4. stage on the board and verify there
    head("stage in %s and verify on the board" % TMP)
    ctx["written"] = True
    with tempfile.TemporaryDirectory(prefix="evse-deploy-") as tmp:
        st = os.path.join(tmp, "stage")
        os.makedirs(os.path.join(st, "root", "trust"))
        for m, data in mods.items():
            p = os.path.join(st, "mods", m)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        for name in ("boot.py", "bootev.py", "bootrom.py", "main.py"):
            shutil.copyfile(os.path.join(ROOT, name), os.path.join(st, "root", name))
        with open(os.path.join(st, "root", "trust", "keys.bin"), "wb") as f:
            f.write(b"".join(raw_keys))
        from tools import provision
        # both checksummed copies, newer than anything on the board (firmware/config.py)
        provision.write_config(os.path.join(st, "root"), cfg, (pr.get("config_seq") or 0) + 1)
        root_files = ["boot.py", "bootev.py", "bootrom.py", "main.py", "config.bak", "config.json", "trust/keys.bin"]
        if tls_ca:
            shutil.copyfile(tls_ca, os.path.join(st, "root", ca_board[1:]))
            root_files.append(ca_board[1:])
        if mfr_root is not None:
            from tools import certs
            os.makedirs(os.path.join(st, "root", "ocpp", "certs"), exist_ok=True)
            with open(os.path.join(st, "root", *certs.MFR_ROOT_PATH.split("/")), "wb") as f:
                f.write(mfr_root)
            root_files.append(certs.MFR_ROOT_PATH)
        lib_out, stale = _stage_lib(lib_dir, os.path.join(tmp, "libstage"), pr["mpy"], log)
        img_board = "/slots/%s.img" % slot
        args = {"slot": slot, "image": img_board, "keys": TMP + "/root/trust/keys.bin",
                "board": bid, "version_tuple": rel.version_tuple, "sec": rel.security_counter,
                "root_files": root_files, "remove": stale}
        with open(os.path.join(st, "args.json"), "w") as f:
            json.dump(args, f)
        shutil.copyfile(DEVICE_SCRIPT, os.path.join(st, "deploy_install.py"))
        relimg = os.path.join(tmp, "release.img")
        with open(relimg, "wb") as f:
            f.write(rel.data)

        dirs = {"/slots", "/lib"}
        for dp, _, fns in os.walk(st):
            for fn in fns:
                dirs.update(_parents(TMP + "/" + os.path.relpath(os.path.join(dp, fn), st)))
        for p, _ in lib_out:
            dirs.update(_parents(p))
        dirs = sorted(dirs)
        cps, staged = [], 0
        for dp, _, fns in os.walk(st):
            for fn in sorted(fns):
                h = os.path.join(dp, fn)
                dst = TMP + "/" + os.path.relpath(h, st).replace(os.sep, "/")
                cps += ["+", "fs", "cp", h, ":" + dst]
                staged += os.path.getsize(h)
        cps += ["+", "fs", "cp", relimg, ":" + img_board]
        state_staged = ("the running firmware, boot record, config and keys are unchanged; "
                        "staging files may remain in %s and %s (the next deploy replaces them)"
                        % (TMP, img_board))
        try:
            b.exec("import os\nfor d in %r:\n    try:\n        os.mkdir(d)\n    except OSError:\n"
                   "        pass\n" % (dirs,))
            b.run(*cps[1:])
        except DeployError as e:
            e.state = state_staged
            raise
        log("      %s <- %d staging files (%s): release modules, boot.py, main.py, config.json, "
            "trust/keys.bin%s" % (TMP, len(cps) // 5 - 1, _size(staged), ", CA" if tls_ca else ""))
        log("      %s <- %s (%s)" % (img_board, os.path.basename(rel.image), _size(len(rel.data))))
        res = _device(b, "verify", state_staged)
        if not res.get("ok"):
            _cleanup(b, img_board)
            raise DeployError("REFUSED by the board: the staged image does not verify there: %s"
                              % res.get("error"), state="unchanged (staging files removed)")
        log("      verified on the board: version %s, board %s, security counter %s"
            % (".".join(str(x) for x in res["version"][:3]), res["board"], res["security_counter"]))

        # ---- 5. install
        head("install: lib/, bootstrap, keys, config, slot %s, boot record" % slot)
        libcp = []
        for p, size in lib_out:
            libcp += ["+", "fs", "cp", os.path.join(tmp, "libstage", p[1:]), ":" + p]
        try:
            out = b.run(*libcp[1:])
        except DeployError as e:
            e.state = "lib/ may be partly updated; " + state_staged
            raise
        for p, size in lib_out:
            log("      %-26s %8s%s" % (p, _size(size), "  (up to date)" if "Up to date: " + p[1:] in out
                                        or "Up to date: " + p in out else ""))
        res = _device(b, "install", "unknown: the install step did not report; run deploy again")
        if not res.get("ok"):
            raise DeployError("install failed at stage %s: %s" % (res.get("stage"), res.get("error")),
                              state=_failed_state(res.get("stage"), slot, rec))
        for r in root_files:
            log("      /%-25s %8s" % (r, _size(os.path.getsize(os.path.join(st, "root", r)))))
        man = res["manifest"]
        log("      /slots/%s/                %8s  %d files, version %s (MANIFEST written)"
            % (slot, _size(man["size"]), man["count"], man["version"]))
        r = res["record"]
        log("      boot record: active %s, confirmed, floor %s (seq %s)" % (r["active"], r["floor"], r["seq"]))
        log("      removed %s and %s" % (img_board, TMP))

    # ---- 6. final state
    head("the board now holds")
    pr2 = b.probe()
    for p, s in pr2["files"]:
        if s >= 0 and not p.startswith(("/slots/a/", "/slots/b/")):
            log("      %8d  %s" % (s, p))
    for s in ("a", "b"):
        n = [x for x in pr2["files"] if x[0].startswith("/slots/%s/" % s) and x[1] >= 0]
        if n:
            info = (pr2.get("slots") or {}).get(s, {})
            log("      %8d  /slots/%s/  (%d files, version %s%s%s)" % (
                sum(x[1] for x in n), s, len(n), info.get("version"),
                ", bootable" if info.get("ok") else ", NOT bootable: %s" % info.get("why"),
                ", active" if s == slot else ""))
    if reset:
        b.soft_reset()
        log("board reset: it boots slot %s (%s)" % (slot, rel.version))
    else:
        log("not reset (--no-reset): the new firmware starts at the next reset")
    return dict(plan, ok=True, dry_run=False, record=res["record"], manifest=res["manifest"],
                files=pr2["files"])


def _parents(path):
    """'/a/b/c.py' -> {'/a', '/a/b'}."""
    parts = path.replace(os.sep, "/").strip("/").split("/")[:-1]
    return {"/" + "/".join(parts[:i + 1]) for i in range(len(parts))}


def _device(b, mode, state):
    code = ("import sys\nif %r not in sys.path:\n    sys.path.insert(0, %r)\n"
            "sys.modules.pop('deploy_install', None)\nimport deploy_install\n"
            "deploy_install.main(%r)\n" % (TMP, TMP, mode))
    try:
        out = b.exec(code)
    except DeployError as e:
        e.state = state
        raise
    for line in out.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    raise DeployError("the board script gave no result:\n%s" % out.strip()[-800:], state=state)


def _cleanup(b, img):
    try:
        b.exec("import os\ntry:\n    os.remove(%r)\nexcept OSError:\n    pass\n"
               "import sys\nsys.path.insert(0, %r)\nimport deploy_install\n"
               "deploy_install._rmtree(%r)\n" % (img, TMP, TMP))
    except DeployError:
        pass


def _failed_state(stage, slot, rec):
    prev = "slot %s" % rec["active"] if rec else "no slot"
    if stage in ("args", "verify"):
        return "unchanged: nothing was moved into place (staging in %s remains)" % TMP
    if stage == "files":
        return ("boot.py/main.py/config.json/trust may be partly replaced; slots and boot record "
                "unchanged. Run deploy again")
    if stage == "slot":
        return ("bootstrap, config and keys are the new ones; slot %s is incomplete (no MANIFEST, "
                "never booted); the boot record still selects %s. Run deploy again" % (slot, prev))
    if stage == "record":
        return ("slot %s is installed and verifies, but the boot record was not written: "
                "the board still boots %s. Run deploy again" % (slot, prev))
    return "installed; only the clean-up of %s failed (harmless)" % TMP


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="evsectl deploy",
        description="Put the bootstrap (boot.py, main.py), lib/ (umqtt), the trusted keys, the device "
                    "config and a signed release on a board over its serial port with mpremote; "
                    "works on a real board (/dev/ttyUSB0, /dev/ttyACM0) and on a virtual board's pty. "
                    "Refuses, before anything is written, a release for another board or another "
                    ".mpy bytecode version, a bad signature, a bad config and a missing lib/. "
                    "See docs/deploy.md.",
        epilog="Board id: --board, else the board's /config.json. Config: the board's /config.json "
               "< --config FILE < the options.")
    ap.add_argument("--port", required=True, help="serial port of the board (or a virtual board's pty)")
    ap.add_argument("--release", required=True, help="build/evse-<board>-<version>.json or .img")
    ap.add_argument("--key-pub", action="append", default=[], required=True,
                    help="trusted public key (raw .pub or PEM), repeatable (key rotation)")
    ap.add_argument("--id", required=True, help="device id written to /config.json")
    ap.add_argument("--board", default=None, help="board id (%s); default: the board's /config.json"
                    % ", ".join(BOARDS))
    ap.add_argument("--broker", default=None, help="MQTT broker HOST:PORT")
    ap.add_argument("--user", default=None, help="MQTT user name")
    ap.add_argument("--password", default=None, help="MQTT password")
    ap.add_argument("--tls-ca", default=None, help="CA certificate for MQTT over TLS (goes to /trust/)")
    ap.add_argument("--ocpp", default=None, metavar="URL",
                    help="OCPP 1.6J CSMS ws://... or wss://... (ocpp.url; the board connects to "
                         "URL/<charge box id>)")
    ap.add_argument("--ocpp-auth-key", default=None, metavar="K",
                    help="OCPP Basic auth key (ocpp.auth_key: charge_box_id:K)")
    ap.add_argument("--ocpp-mfr-root", default=None, metavar="PEM",
                    help="OCPP Manufacturer root certificate (PEM or DER) that the signing "
                         "certificates of SignedUpdateFirmware must chain to (/ocpp/certs/M0.der)")
    ap.add_argument("--config", default=None, help="JSON file merged into /config.json")
    ap.add_argument("--reset-config", action="store_true",
                    help="start from the defaults instead of the board's current /config.json")
    ap.add_argument("--slot", choices=("a", "b"), default=None,
                    help="slot to install into (default: the inactive one; a on an empty board)")
    ap.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    ap.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board at the end")
    ap.add_argument("--force", action="store_true",
                    help="deploy even while a charging session runs on the board (it ends)")
    a = ap.parse_args(argv)
    try:
        deploy(a.port, a.release, a.key_pub, a.id, board=a.board, broker=a.broker, user=a.user,
               password=a.password, tls_ca=a.tls_ca, config=a.config, slot=a.slot,
               dry_run=a.dry_run, yes=a.yes, reset=not a.no_reset, reset_config=a.reset_config,
               force=a.force, ocpp=a.ocpp, ocpp_auth_key=a.ocpp_auth_key,
               ocpp_mfr_root=a.ocpp_mfr_root)
    except DeployError as e:
        sys.stderr.write("evsectl deploy: %s\n  board state: %s\n" % (e, e.state))
        return 1
    except (ValueError, OSError, RuntimeError) as e:
        sys.stderr.write("evsectl deploy: error: %s\n" % e)
        return 1
    print("deploy: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
