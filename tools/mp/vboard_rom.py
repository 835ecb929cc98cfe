# The "ROM" of a virtual board (MicroPython, unix port). Started by the host
# tool (tools/vboard.py), one process per power-on:
#
#   micropython [-i] vboard_rom.py --flash IMG [--mode boot|repl] [--port N]
#       [--hb FD] [--id ID] [--cause CAUSE] [--world FILE] [--block-size B]
#       [--wdt MS] [--rom P0[,P1] --rom-size BYTES]
#
# It opens the flash image (LittleFS on a FileBlockDevice) and what it needs
# from the host, then REPLACES the root filesystem with the flash, as a board
# has it: '/' is the LittleFS, sys.path is ['', '.frozen', '/lib'].
#   --mode boot: runs /boot.py then /main.py from the flash, exactly as a
#                board does, and ends the process with an exit code that tells
#                the host what happened (EXIT_* below).
#   --mode repl: mounts and returns; the host starts it with -i so that the
#                unix port's own REPL (friendly, raw, raw-paste) serves
#                mpremote. A soft reset there ends the process with code 0.
# --rom: ROM partitions (ROMFS, bytecode executed in place) emulated in host
# files (firmware/hal/simrom.py): Host.rom_ioctl answers as vfs.rom_ioctl does
# on a board (boot.py/bootrom.py, firmware/ota/romslot.py use it). Their
# "memory-mapped" contents are bytearrays allocated here before boot.py runs:
# flash on a board, so the host adds their size to the process heap and heap
# figures subtract Host.rom_heap (docs/vboard.md).
# The host object registered as sys.modules['_vboard'] gives the firmware
# (firmware/hal/simctl.py) the control port, power-cut injection, the
# watchdog heartbeat and the exit codes.
import sys
import os
import time
import vfs

EXIT_SOFT = 0     # soft reset (Ctrl-D in the REPL): boot again
EXIT_REPL = 3     # main.py ended or was interrupted: restart into the REPL
EXIT_RESET = 4    # machine reset (board.reset(), control 'reset')
EXIT_WDT = 5      # watchdog expired (seen by the board itself)
EXIT_POWER = 6    # power cut (PowerCut from the flash, control 'power_cycle')
EXIT_HALT = 7     # power off: the host stops the board
_WORLD_MAX = 1024


class Host:
    EXIT_SOFT = EXIT_SOFT
    EXIT_REPL = EXIT_REPL
    EXIT_RESET = EXIT_RESET
    EXIT_WDT = EXIT_WDT
    EXIT_POWER = EXIT_POWER
    EXIT_HALT = EXIT_HALT

    def __init__(self, flash, hb, control_port, device_id, reset_cause, world):
        self.flash = flash
        self._hb = hb
        self.control_port = control_port
        self.device_id = device_id
        self.reset_cause = reset_cause
        self._world = world   # host file, opened before '/' was replaced
        self._last = time.ticks_ms()
        self.wdt_ms = None
        self.wdt_override = None   # the board's watchdog period, when the host sets one
        # repl mode after main.py was interrupted: what it was doing then
        # ({"agent": bool, "session": dict or None}; a board keeps that in
        # sys.modules, a virtual board's REPL is a new process)
        self.interrupted = None
        self.rom_ioctl = None      # ROM partitions (--rom), else None: a board without
        self.rom_heap = 0          # heap bytes their emulated mapping takes (flash on a board)
        self.rom_script = 0        # heap this script holds when boot.py starts (set in main)

    def note_interrupted(self):
        """main.py ended (Ctrl-C): tell the host what ran, for the REPL after."""
        a = getattr(sys.modules.get("firmware.agent"), "current", None)
        try:
            sess = a.evse.session if a is not None else None
        except Exception:
            sess = None
        if self._hb is not None:
            import json
            self._hb.write(b"I" + json.dumps({"agent": a is not None, "session": sess}).encode() + b"\n")

    # -- flash
    def flash_cut(self):
        return self.flash.dead

    def cut_after(self, n):
        self.flash.cut_after(n)

    # -- watchdog heartbeat to the host ("S<ms>\n" armed, "." fed)
    def wdt_start(self, ms):
        if self.wdt_override:
            ms = self.wdt_override
        self.wdt_ms = ms
        if self._hb is not None:
            self._hb.write(b"S%d\n" % ms)

    def wdt_feed(self):
        hb = self._hb
        if hb is not None:
            now = time.ticks_ms()
            if time.ticks_diff(now, self._last) >= 50:
                self._last = now
                hb.write(b".")

    # -- the simulated world (vehicle, grid): kept by the host across resets
    def load_world(self):
        f = self._world
        if f is None:
            return None
        f.seek(0)
        text = f.read(_WORLD_MAX).strip()
        return text.decode() if text else None

    def save_world(self, text):
        f = self._world
        if f is None:
            return
        data = text.encode()
        if len(data) > _WORLD_MAX:
            raise ValueError("world state too large")
        f.seek(0)
        f.write(data + b" " * (_WORLD_MAX - len(data)))


def _args(argv):
    opts = {"--mode": "boot", "--port": "0", "--hb": "", "--id": "", "--cause": "power",
            "--world": "", "--block-size": "4096", "--flash": "", "--wdt": "", "--interrupted": "",
            "--rom": "", "--rom-size": "0"}
    i = 0
    while i < len(argv):
        k = argv[i]
        if k not in opts or i + 1 >= len(argv):
            raise SystemExit("vboard_rom: bad argument %r" % k)
        opts[k] = argv[i + 1]
        i += 2
    if not opts["--flash"] or opts["--mode"] not in ("boot", "repl"):
        raise SystemExit("vboard_rom: --flash IMG [--mode boot|repl] needed")
    return opts


def _run(name):
    # /<name>.py compiled by the import machinery: streamed from the file like
    # a board's file lexer (reading the whole source first costs its size in
    # RAM on top of the compiler's). __name__ is thus <name>, not '__main__'.
    try:
        os.stat("/" + name + ".py")
    except OSError:
        return False
    __import__(name)
    return True


def _purge_host_modules():
    for k in list(sys.modules):
        if k == "firmware" or k.startswith("firmware."):
            del sys.modules[k]


def _exit_code(e, host, PowerCut):
    if host.flash.dead or isinstance(e, PowerCut):
        return EXIT_POWER
    if isinstance(e, SystemExit):
        code = e.args[0] if e.args else 0
        if code in (EXIT_REPL, EXIT_RESET, EXIT_WDT, EXIT_POWER, EXIT_HALT):
            return code
        return EXIT_SOFT  # sys.exit() in main.py: a board soft-resets
    if type(e).__name__ == "SimReset":
        return EXIT_RESET
    return EXIT_REPL


def main():
    o = _args(sys.argv[1:])
    from firmware.hal.simflash import FileBlockDevice, PowerCut
    flash = FileBlockDevice(o["--flash"], int(o["--block-size"]))
    hb = open("/dev/fd/" + o["--hb"], "wb") if o["--hb"] else None
    world = open(o["--world"], "r+b") if o["--world"] else None
    host = Host(flash, hb, int(o["--port"]), o["--id"], o["--cause"], world)
    if o["--wdt"]:
        host.wdt_override = int(o["--wdt"])
    if o["--interrupted"]:
        import json
        try:
            host.interrupted = json.loads(o["--interrupted"])
        except ValueError:
            host.interrupted = {"agent": None, "session": None}
    if o["--rom"]:
        from firmware.hal.simrom import SimRom, flash_gate
        rom = SimRom(o["--rom"].split(","), int(o["--rom-size"]), gate=flash_gate(flash), create=True)
        host.rom_ioctl = rom.ioctl
        host.rom_heap = rom.heap_cost()
    _purge_host_modules()
    # everything from the host is open: '/' becomes the board's flash
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(flash, readsize=32, progsize=32, lookahead=32), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    sys.modules["_vboard"] = host
    if o["--mode"] == "repl":
        return None
    import gc
    gc.collect()
    # what this script (a board's C ROM) holds when boot.py starts, without the
    # emulated ROM partitions' mapping (flash on a board): heap figures subtract both
    host.rom_script = gc.mem_alloc() - host.rom_heap
    print("vboard: %s power-on (%s), %d bytes of heap free" % (o["--id"], o["--cause"], gc.mem_free()))
    try:
        _run("boot")
        _run("main")
        code = EXIT_REPL
    except BaseException as e:  # noqa: everything ends the power-on
        code = _exit_code(e, host, PowerCut)
        if code == EXIT_REPL:
            sys.print_exception(e)
            host.note_interrupted()
    return code


_code = main()
if _code is not None:
    sys.exit(_code)
