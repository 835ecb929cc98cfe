"""`evsectl vboard`: a virtual charger board on the MicroPython unix port.

One board = one directory: flash.img (LittleFS, created on first start by
tools/provision.py and kept across restarts), console.log, world.json (the
simulated vehicle and grid, kept across resets) and vboard.json (pid, pty,
control port of the running board). The host tool runs
`micropython tools/mp/vboard_rom.py` (the board's "ROM": mounts the flash as
'/', runs /boot.py and /main.py), and

* gives it a console on a pty: the path printed at start (and --pty-link)
  is a serial port for `mpremote connect PTY resume ...`, picocom, screen;
* restarts it with the same flash when it resets, when its watchdog is not
  fed in time (the host plays the hardware watchdog), after a power cut, and
  into the REPL when main.py ends or is interrupted (Ctrl-C);
* stops it on SIGINT/SIGTERM (CLI) or stop() (API).

Control channel: JSON lines on 127.0.0.1:<control port> (docs/vboard.md).

Python API (tests, demo):
    b = VBoard(dir, id="vb1", broker="127.0.0.1:1883").start()
    b.control("plug", state="C", max_current_a=16)
    b.wait_for(lambda: b.get()["relay"], timeout=10)
    b.stop()
"""
import argparse
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tty

from tools import mpunix
from tools.netutil import free_port

ROM = os.path.join(mpunix.ROOT, "tools", "mp", "vboard_rom.py")

# exit codes of the ROM (tools/mp/vboard_rom.py)
EXIT_SOFT, EXIT_REPL, EXIT_RESET, EXIT_WDT, EXIT_POWER, EXIT_HALT = 0, 3, 4, 5, 6, 7
_REBOOT = {EXIT_SOFT: "soft", EXIT_RESET: "reset", EXIT_WDT: "wdt", EXIT_POWER: "power"}
_CONSOLE_KEEP = 1 << 20
_WDT_SLACK_MS = 150
# The ROM (a script here, C on a board) and the simulated flash driver live in
# the same heap as the firmware: the process gets this much on top of --heap,
# so that the firmware has about --heap for itself.
ROM_HEAP = 16 * 1024
# ROM partitions of a board with --romfs (ROMFS slots, docs/memory.md): two of
# this size (rom0.img for slot a, rom1.img for slot b, beside flash.img). Their
# emulated mapping is heap of the process (flash on a board): added on top.
ROM_PART_SIZE = 192 * 1024
ROM_PARTS = 2


def heap_bytes(text):
    """'96K', '1M', '98304' -> bytes."""
    t = str(text).strip().upper()
    mul = 1
    if t.endswith("K"):
        t, mul = t[:-1], 1024
    elif t.endswith("M"):
        t, mul = t[:-1], 1024 * 1024
    if not t.isdigit() or int(t) * mul < 16 * 1024:
        raise ValueError("bad heap size %r (e.g. 96K, at least 16K)" % (text,))
    return int(t) * mul


class VBoardError(Exception):
    pass


def _set_console_modes(fd):
    """The board side of the console: raw input and output, but Ctrl-C still
    raises SIGINT while a program runs (the unix port switches ISIG off in its
    REPL and back on while it executes code, as on a terminal)."""
    a = termios.tcgetattr(fd)
    a[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON
              | termios.INLCR | termios.IGNCR)
    a[1] &= ~termios.OPOST
    a[2] = (a[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    a[3] = termios.ISIG | termios.NOFLSH
    a[6][termios.VMIN] = 1
    a[6][termios.VTIME] = 0
    a[6][termios.VINTR] = 3
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _nonblock(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class VBoard:
    """A virtual board (see the module doc). All arguments but `dir` are
    optional: id defaults to the directory name, the control port to a free
    one. `config` (dict) and `keys` (key files or raw bytes) are used when
    the flash is created; `broker` too, and it is also written into an
    existing flash's configuration."""

    def __init__(self, dir, id=None, broker=None, control_port=None, pty_link=None, heap="320K",
                 fresh=False, config=None, keys=(), version=None, echo=None, mpy=True,
                 wdt_ms=None, blank=False, ocpp=None, files=None, ocpp_mfr_root=None, romfs=False,
                 rom_parts=ROM_PARTS, rom_size=ROM_PART_SIZE, flash_blocks=None):
        self.dir = os.path.abspath(dir)
        self.blank = blank               # start with an empty LittleFS (a board fresh from flashing)
        self.id = id or os.path.basename(self.dir.rstrip("/")) or "vboard"
        self.broker = broker
        self.ocpp = ocpp                 # CSMS URL: written into ocpp.url (new and existing flash)
        self.files = files               # {path: bytes} put on a new flash (e.g. ocpp.ca)
        self.ocpp_mfr_root = ocpp_mfr_root  # OCPP Manufacturer root (PEM/DER): ocpp/certs/M0.der
        self.control_port = control_port or free_port()
        self.pty_link = pty_link
        self.heap = heap
        heap_bytes(heap)
        self.fresh = fresh
        self.config = config
        self.keys = keys
        self.version = version
        self.mpy = mpy
        self.wdt_ms = wdt_ms             # watchdog period forced on the firmware (None: its own)
        # ROM partitions (ROMFS slots): files rom<i>.img in dir, or none
        self.romfs = bool(romfs)
        self.rom_parts = rom_parts if romfs else 0
        self.rom_size = rom_size
        self.roms = [os.path.join(self.dir, "rom%d.img" % i) for i in range(self.rom_parts)]
        self.flash_blocks = flash_blocks   # 4 KiB blocks of a new flash (None: provision's 2 MiB)
        self.echo = echo                 # a file to copy the console to (CLI: stdout)
        self.flash = os.path.join(self.dir, "flash.img")
        self.world = os.path.join(self.dir, "world.json")
        self.pty = None
        self.boots = 0
        self.exits = []                  # [(exit code or -signal, what the host did)]
        self.mode = "boot"
        self.cause = "power"
        self.halted = None               # why the board stopped on its own, or None
        self._raw = False                # the REPL is in raw mode (last prompt seen)
        self._tail = b""
        self._inject = b""               # typed into the next process at its start
        self._console = bytearray()
        self._console_base = 0           # bytes dropped from the front of _console
        self._cond = threading.Condition()
        self._proc = None
        self._stop = False
        self._kill_reason = None
        self._interrupted = None         # what main.py was doing when interrupted (JSON from the ROM)
        self._thread = None
        self._fds = []
        self._log = None
        self._lockfd = None

    # ---- life ---------------------------------------------------------------
    def start(self, background=True):
        """Create the flash if needed, open the console pty, start the board.
        background=False runs the supervisor in this thread until stop().
        Raises VBoardError when another virtual board runs from this directory
        (its lock, <dir>/vboard.lock, is held)."""
        os.makedirs(self.dir, exist_ok=True)
        self._lock_dir()
        try:
            self._prepare_flash()
        except BaseException:
            self._unlock_dir()
            raise
        if not os.path.exists(self.world):
            with open(self.world, "w"):
                pass
        self._open_ptys()
        self._log = open(os.path.join(self.dir, "console.log"), "ab")
        self._write_state()
        if background:
            self._thread = threading.Thread(target=self._supervise, name="vboard-" + self.id,
                                            daemon=True)
            self._thread.start()
            return self
        self._supervise()
        return self

    def _lock_dir(self):
        """One board per directory: an exclusive flock on <dir>/vboard.lock,
        held while the board runs. The kernel drops it when the holder dies,
        so a lock left by a killed board is stale by construction; the file
        names the holder's pid for the message."""
        path = os.path.join(self.dir, "vboard.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            alive = holder.isdigit() and _pid_alive(int(holder))
            raise VBoardError("directory %s is in use by a running virtual board (pid %s%s): stop it "
                              "first, or use another --dir" % (self.dir, holder, "" if alive else "?"))
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._lockfd = fd

    def _unlock_dir(self):
        fd = getattr(self, "_lockfd", None)
        if fd is not None:
            self._lockfd = None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)      # releases the flock

    def _prepare_flash(self):
        from tools import provision
        if self.blank and (self.fresh or not os.path.exists(self.flash)):
            if os.path.exists(self.world):
                os.remove(self.world)
            for p in self.roms:
                if os.path.exists(p):
                    os.remove(p)
            provision.blank(self.flash)
            return
        if self.fresh or not os.path.exists(self.flash):
            if os.path.exists(self.world):
                os.remove(self.world)
            for p in self.roms:          # a new flash: erased ROM partitions
                if os.path.exists(p):
                    os.remove(p)
            kw = {}
            if self.flash_blocks:
                kw["block_count"] = self.flash_blocks
            if self.version:
                kw["version"] = self.version
            cfg = self.config
            if self.ocpp:
                cfg = dict(cfg or {})
                cfg["ocpp"] = dict(cfg.get("ocpp") or {}, url=self.ocpp)
                if not self.broker and "mqtt" not in cfg:
                    cfg["mqtt"] = {"host": ""}     # OCPP only: no MQTT link
            files = dict(self.files or {})
            if self.ocpp_mfr_root:
                files.update(self._mfr_root())
            if files:
                kw["files"] = files
            provision.provision(self.flash, self.id, "sim", self.broker, cfg, self.keys,
                                mpy=self.mpy, **kw)
        else:
            changes = {}
            if self.broker:
                host, port = provision.parse_hostport(self.broker)
                changes["mqtt"] = {"host": host, "port": port}
            if self.ocpp:
                changes["ocpp"] = {"url": self.ocpp}
            if changes:
                provision.update_config(self.flash, changes)
            if self.ocpp_mfr_root:
                provision.put_files(self.flash, self._mfr_root())

    def _mfr_root(self):
        from tools import certs
        return {certs.MFR_ROOT_PATH: certs.certstore_file(self.ocpp_mfr_root)}

    def _open_ptys(self):
        # user side: a serial port for mpremote; board side: the process console
        self._ma, self._sa = os.openpty()
        tty.setraw(self._sa)
        self._mb, self._sb = os.openpty()
        _set_console_modes(self._sb)
        for fd in (self._ma, self._mb):
            _nonblock(fd)
        self._fds = [self._ma, self._sa, self._mb, self._sb]
        self.pty = os.ttyname(self._sa)
        if self.pty_link:
            try:
                os.unlink(self.pty_link)
            except FileNotFoundError:
                pass
            os.symlink(self.pty, self.pty_link)

    def _write_state(self):
        st = {"id": self.id, "pid": os.getpid(), "pty": self.pty, "pty_link": self.pty_link,
              "control_port": self.control_port, "flash": self.flash}
        with open(os.path.join(self.dir, "vboard.json"), "w") as f:
            json.dump(st, f)

    def stop(self, timeout=5):
        """Power the board off and release its pty and port."""
        self._stop = True
        p = self._proc
        if p is not None and p.poll() is None:
            self._kill(p)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._cleanup()

    def _cleanup(self):
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        if self.pty_link:
            try:
                os.unlink(self.pty_link)
            except OSError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        if getattr(self, "_lockfd", None) is not None:   # only the lock holder owns vboard.json
            try:
                os.remove(os.path.join(self.dir, "vboard.json"))
            except OSError:
                pass
        self._unlock_dir()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def rom_heap(self):
        """Heap the emulated ROM partitions' mapping takes (flash on a board):
        the process gets it on top of --heap; heap figures subtract it."""
        return self.rom_size * self.rom_parts

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self):
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    def reset(self):
        """Hard reset from outside (the reset button): restart the process."""
        self._kill_proc("reset")

    def power_cycle(self):
        """Pull the plug: the process dies at once, whatever it was writing."""
        self._kill_proc("power")

    def _kill_proc(self, why):
        p = self._proc
        if p is None or p.poll() is not None:
            raise VBoardError("board %s is not running" % self.id)
        self._kill_reason = why
        self._kill(p)

    @staticmethod
    def _kill(p):
        try:
            p.kill()
        except OSError:
            pass

    # ---- the supervisor -------------------------------------------------------------
    def _spawn(self):
        hb_r, hb_w = os.pipe()
        argv = mpunix.argv(ROM, "--flash", self.flash, "--mode", self.mode,
                           "--port", str(self.control_port), "--hb", str(hb_w), "--id", self.id,
                           "--cause", self.cause, "--world", self.world,
                           heap=str(heap_bytes(self.heap) + ROM_HEAP + self.rom_heap))
        if self.roms:
            argv += ["--rom", ",".join(self.roms), "--rom-size", str(self.rom_size)]
        if self.wdt_ms:
            argv += ["--wdt", str(int(self.wdt_ms))]
        if self.mode == "repl":
            argv.insert(1, "-i")
            if self._interrupted:
                argv += ["--interrupted", self._interrupted]
        else:
            self._interrupted = None
        sb = self._sb
        _set_console_modes(sb)   # a process killed inside its REPL leaves the tty raw

        def child():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        p = subprocess.Popen(argv, stdin=sb, stdout=sb, stderr=sb, pass_fds=(hb_w,),
                             preexec_fn=child, env=mpunix.env(), cwd=self.dir)
        os.close(hb_w)
        _nonblock(hb_r)
        self.boots += 1
        if self._inject:
            self._to_board(self._inject)
            self._inject = b""
        return p, hb_r

    def _supervise(self):
        try:
            while not self._stop:
                p, hb = self._spawn()
                with self._cond:
                    self._proc = p
                    self._cond.notify_all()
                try:
                    rc, how = self._run(p, hb)
                finally:
                    os.close(hb)
                if self._stop:
                    break
                self._after_exit(rc, how)
        except Exception as e:  # noqa - record why the supervisor died
            self.halted = "host error: %s" % e
            raise
        finally:
            p = self._proc
            if p is not None and p.poll() is None:
                self._kill(p)
                p.wait()
            with self._cond:
                self._proc = None
                self._cond.notify_all()

    def _after_exit(self, rc, how):
        if how is not None:                 # killed by the host
            self.exits.append((rc, how))
            self.mode, self.cause = "boot", how
            return
        if rc == EXIT_REPL:
            self.exits.append((rc, "repl"))
            self.mode = "repl"
            self._raw = False
            return
        if rc == EXIT_SOFT:
            # Ctrl-D in the REPL: the unix port exits; a board soft-reboots and,
            # from the raw REPL, stays in the raw REPL (mpremote waits for that)
            self._say(b"MPY: soft reboot\r\n")
            if self.mode == "repl" and self._raw:
                self.exits.append((rc, "soft-raw"))
                self._inject = b"\x01"
                return
        if rc in _REBOOT:
            self.exits.append((rc, _REBOOT[rc]))
            self.mode, self.cause = "boot", _REBOOT[rc]
            return
        self.exits.append((rc, "halt"))
        self.halted = "power off" if rc == EXIT_HALT else "exit code %s (see console.log)" % rc
        self._stop = True

    def _run(self, p, hb):
        """Relay the console and play the watchdog until the process ends.
        Returns (returncode, how) where how is the host's kill reason or None."""
        wdt_ms = None
        fed = time.monotonic()
        hbuf = b""
        ma, mb = self._ma, self._mb
        while True:
            r, _, _ = select.select([ma, mb, hb], [], [], 0.05)
            if mb in r:
                self._from_board(mb)
            if ma in r:
                try:
                    data = os.read(ma, 4096)
                except OSError:
                    data = b""
                if data:
                    self._to_board(data)
            if hb in r:
                try:
                    data = os.read(hb, 256)
                except BlockingIOError:
                    data = b""
                if data:
                    hbuf += data
                    fed = time.monotonic()
                    while b"\n" in hbuf:
                        line, _, hbuf = hbuf.partition(b"\n")
                        line = line.strip(b".")
                        if line.startswith(b"S"):
                            wdt_ms = int(line[1:])
                        elif line.startswith(b"I"):
                            self._interrupted = line[1:].decode("utf-8", "replace")
                    hbuf = hbuf.strip(b".")
            if (wdt_ms is not None and self._kill_reason is None
                    and (time.monotonic() - fed) * 1000 > wdt_ms + _WDT_SLACK_MS):
                self._say(b"\r\n[vboard] watchdog: no feed for %d ms, reset\r\n" % wdt_ms)
                self._kill_reason = "wdt"
                self._kill(p)
            rc = p.poll()
            if rc is not None:
                self._drain(mb)
                try:
                    hbuf += os.read(hb, 4096)
                except (BlockingIOError, OSError):
                    pass
                for line in hbuf.split(b"\n"):
                    line = line.strip(b".")
                    if line.startswith(b"I"):
                        self._interrupted = line[1:].decode("utf-8", "replace")
                how, self._kill_reason = self._kill_reason, None
                return rc, how

    def _drain(self, mb):
        for _ in range(64):
            if not select.select([mb], [], [], 0.01)[0]:
                return
            if not self._from_board(mb):
                return

    def _from_board(self, mb):
        try:
            data = os.read(mb, 65536)
        except OSError:
            return False
        if not data:
            return False
        self._note(data)
        t = self._tail + data
        r, f = t.rfind(b"raw REPL; CTRL-B to exit"), t.rfind(b"\n>>> ")
        if r >= 0 or f >= 0:
            self._raw = r > f
        self._tail = t[-32:]
        try:
            os.write(self._ma, data)
        except OSError:
            pass   # nobody reads the user side and its buffer is full: drop, as a UART does
        return True

    def _say(self, data):
        # the host speaks on the console (as a board's ROM would)
        self._note(data)
        try:
            os.write(self._ma, data)
        except OSError:
            pass

    def _to_board(self, data):
        try:
            os.write(self._mb, data)
        except OSError:
            pass

    def _note(self, data):
        if self._log is not None:
            self._log.write(data)
            self._log.flush()
        if self.echo is not None:
            self.echo.write(data.decode("utf-8", "replace"))
            self.echo.flush()
        with self._cond:
            self._console += data
            if len(self._console) > _CONSOLE_KEEP:
                cut = len(self._console) - _CONSOLE_KEEP // 2
                del self._console[:cut]
                self._console_base += cut
            self._cond.notify_all()

    # ---- console ------------------------------------------------------------------
    def console(self, since=0):
        """Console output (str) from absolute offset `since` on."""
        with self._cond:
            i = max(0, since - self._console_base)
            return self._console[i:].decode("utf-8", "replace")

    def mark(self):
        """The current console offset (for console(since=...) / wait_output)."""
        with self._cond:
            return self._console_base + len(self._console)

    def wait_output(self, text, timeout=20, since=0):
        """Wait until `text` appears on the console after `since`."""
        end = time.monotonic() + timeout
        want = text.encode()
        with self._cond:
            while True:
                i = max(0, since - self._console_base)
                if self._console.find(want, i) >= 0:
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    raise VBoardError("%s: %r not seen on the console within %ss; last output:\n%s"
                                      % (self.id, text, timeout, self._console[-2000:].decode(
                                          "utf-8", "replace")))
                self._cond.wait(min(left, 0.2))

    # ---- control channel ---------------------------------------------------------------
    def control(self, cmd, timeout=10, **args):
        """Send one control request; returns the reply dict (raises
        VBoardError when the board refuses it). Retries while the board is
        (re)booting, until timeout."""
        req = dict(args, cmd=cmd)
        end = time.monotonic() + timeout
        last = None
        while True:
            try:
                rep = self._request(req, max(0.5, end - time.monotonic()))
                break
            except (ConnectionError, socket.timeout, OSError) as e:
                last = e
                if self.halted:
                    raise VBoardError("%s: board halted (%s)" % (self.id, self.halted))
                if time.monotonic() >= end:
                    raise VBoardError("%s: control channel not answering (%s)" % (self.id, last))
                time.sleep(0.05)
        if not rep.get("ok"):
            raise VBoardError("%s: %s refused: %s" % (self.id, cmd, rep.get("error")))
        return rep

    def _request(self, req, timeout):
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=timeout) as s:
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                d = s.recv(4096)
                if not d:
                    raise ConnectionError("closed before replying")
                buf += d
        return json.loads(buf.partition(b"\n")[0])

    def get(self, timeout=10):
        """The board's outputs (control 'get')."""
        return self.control("get", timeout=timeout)

    def wait_for(self, cond, timeout=20, interval=0.05, what=None):
        """Wait until cond() is truthy (returns its value). cond may also be a
        dict: wait until every key of get() has that value."""
        if isinstance(cond, dict):
            want = cond

            def cond():
                g = self.get()
                return g if all(g.get(k) == v for k, v in want.items()) else None
            what = what or repr(want)
        end = time.monotonic() + timeout
        last = None
        while True:
            try:
                v = cond()
                if v:
                    return v
            except VBoardError as e:
                last = e
            if self.halted:
                raise VBoardError("%s: board halted (%s)" % (self.id, self.halted))
            if time.monotonic() >= end:
                raise VBoardError("%s: timed out after %ss waiting for %s%s" % (
                    self.id, timeout, what or getattr(cond, "__name__", "condition"),
                    " (last error: %s)" % last if last else ""))
            time.sleep(interval)

    def wait_boots(self, n, timeout=20):
        """Wait until the process was started n times in all."""
        return self.wait_for(lambda: self.boots >= n and self.pid, timeout, what="boot %d" % n)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="evsectl vboard",
        description="Run a virtual charger board: the real boot.py/main.py from a LittleFS flash "
                    "image on the MicroPython unix port, a simulated vehicle and grid driven over "
                    "a control channel, and a console pty for mpremote. See docs/vboard.md.")
    ap.add_argument("--dir", required=True, help="board directory (flash image, console log)")
    ap.add_argument("--id", default=None, help="device id (default: the directory name)")
    ap.add_argument("--broker", default=None, help="MQTT broker HOST:PORT")
    ap.add_argument("--ocpp", default=None, metavar="URL",
                    help="OCPP 1.6J CSMS (ws://HOST:PORT/PATH or wss://...): the board connects to "
                         "URL/<charge box id>; written into ocpp.url of a new or existing flash")
    ap.add_argument("--ocpp-mfr-root", default=None, metavar="PEM",
                    help="OCPP Manufacturer root certificate (PEM or DER) that firmware signing "
                         "certificates of SignedUpdateFirmware must chain to; written to "
                         "ocpp/certs/M0.der of a new or existing flash")
    ap.add_argument("--control-port", type=int, default=None,
                    help="TCP port of the control channel on 127.0.0.1 (default: a free one)")
    ap.add_argument("--pty-link", default=None, help="make this path a symlink to the console pty")
    ap.add_argument("--heap", default="320K", help="heap for the firmware (default 320K on the 64-bit unix port; the design budget is 96K on a 32-bit board, see docs/vboard.md)")
    ap.add_argument("--fresh", action="store_true", help="create a new flash image even if one exists")
    ap.add_argument("--blank", action="store_true",
                    help="a new flash is left empty (a board fresh from flashing MicroPython): "
                         "put firmware on it with `evsectl deploy`")
    ap.add_argument("--key", action="append", default=[],
                    help="trusted public key for a new flash (repeatable); a new flash needs --key or --no-key")
    ap.add_argument("--no-key", action="store_true",
                    help="make a new flash that trusts NO key (it accepts no update) on purpose")
    ap.add_argument("--config", default=None, help="JSON object merged into a new flash's config.json")
    ap.add_argument("--wdt-ms", type=int, default=None, help="watchdog period of the board (default: the firmware's)")
    ap.add_argument("--quiet", action="store_true", help="do not copy the console to stdout")
    ap.add_argument("--mp32", action="store_true",
                    help="run on the 32-bit unix port ($MP32 or ../shared/mp32/micropython; "
                         "MICROPYTHON=path selects any binary)")
    ap.add_argument("--romfs", action="store_true", default=None,
                    help="give the board two ROM partitions (rom0.img, rom1.img in --dir, %d KiB "
                         "each): each slot's code runs from a ROMFS image (default with --mp32; "
                         "docs/memory.md)" % (ROM_PART_SIZE // 1024))
    ap.add_argument("--no-romfs", dest="romfs", action="store_false", help="no ROM partitions")
    a = ap.parse_args(argv)
    if a.romfs is None:
        a.romfs = bool(a.mp32)
    if a.mp32:
        b32 = mpunix.mp32_binary()
        if b32 is None:
            ap.error("--mp32: no 32-bit MicroPython at %s (build one with ../shared/mp32/build.sh, "
                     "or set MP32=path)" % ", ".join(mpunix.mp32_candidates()))
        os.environ["MICROPYTHON"] = b32
    if a.control_port is not None and not 0 < a.control_port < 65536:
        ap.error("--control-port must be 1..65535")
    new_flash = a.fresh or not os.path.exists(os.path.join(a.dir, "flash.img"))
    if a.key and a.no_key:
        ap.error("--key and --no-key exclude each other")
    if new_flash and not a.blank and not a.key and not a.no_key:
        ap.error("a new flash needs the release key it trusts: --key keys/release.pub "
                 "(or --no-key: a board that accepts no update)")
    for k in a.key:
        if not os.path.isfile(k):
            ap.error("--key %s: no such file" % k)
    config = None
    if a.config:
        try:
            config = json.loads(a.config)
        except ValueError as e:
            ap.error("--config is not JSON: %s" % e)
        if not isinstance(config, dict):
            ap.error("--config must be a JSON object")
    try:
        b = VBoard(a.dir, id=a.id, broker=a.broker, control_port=a.control_port, pty_link=a.pty_link,
                   heap=a.heap, fresh=a.fresh, keys=a.key, config=config,
                   echo=None if a.quiet else sys.stdout, wdt_ms=a.wdt_ms, blank=a.blank, ocpp=a.ocpp,
                   ocpp_mfr_root=a.ocpp_mfr_root, romfs=a.romfs)
    except ValueError as e:
        ap.error(str(e))

    def on_signal(signum, frame):
        b._stop = True
        p = b._proc
        if p is not None:
            b._kill(p)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sys.stderr.write("vboard %s: dir %s, control 127.0.0.1:%d\n" % (b.id, b.dir, b.control_port))
    try:
        b.start(background=True)
    except (VBoardError, ValueError, OSError) as e:
        sys.stderr.write("evsectl vboard: error: %s\n" % e)
        return 2
    sys.stderr.write("vboard %s: console pty %s%s\n" % (
        b.id, b.pty, " (-> %s)" % a.pty_link if a.pty_link else ""))
    sys.stderr.flush()
    try:
        while b.running:
            b._thread.join(0.2)
    finally:
        b.stop()
    if b.halted and b.halted != "power off":
        sys.stderr.write("vboard %s: halted: %s\n" % (b.id, b.halted))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
