# Control channel of a virtual board (device side): a non-blocking TCP server
# on loopback, polled from the agent loop with bounded work per poll. The
# protocol (JSON lines, one request -> one reply) is documented in
# docs/vboard.md. Only the virtual board uses it; real boards never load it.
#
# The virtual board's ROM (tools/mp/vboard_rom.py) registers a host object as
# sys.modules['_vboard'] before it runs boot.py: the control port, the flash
# block device (power cuts), the watchdog heartbeat to the host tool and the
# exit codes. attach() wires it to the board and the agent.
import sys
import gc
import json
import socket
from micropython import const

_MAX_CLIENTS = const(4)
_RECV = const(512)        # bytes read per client per poll
_MAX_LINE = const(2048)   # longer request lines are refused
_CMDS_PER_POLL = const(4)
_EAGAIN = const(11)
_WORLD = ("plugged", "ev", "diode", "ev_max_a", "cable_pp", "shorted", "welded", "stuck_open",
          "rcd_tripped", "grid_v", "phases", "temp_c", "energy_wh")
_QUERIES = ("ping", "get")


class Exit(SystemExit):
    """Raised to end the board process with a given exit code (reset, power
    cut ...). A SystemExit: `except Exception` in the firmware never stops it."""


def host():
    """The ROM's host object, or None when not running on a virtual board."""
    return sys.modules.get("_vboard")


class _Client:
    def __init__(self, sock):
        self.sock = sock
        self.inbuf = b""
        self.out = b""


def _collect():
    gc.collect()
    return gc.mem_free()


def _num(req, key, default=None, lo=None, hi=None):
    v = req.get(key, default)
    if type(v) is bool or not isinstance(v, (int, float)):
        raise ValueError("%s must be a number, got %r" % (key, v))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError("%s=%r outside %r..%r" % (key, v, lo, hi))
    return v


def _bool(req, key, default):
    v = req.get(key, default)
    if type(v) is not bool:
        raise ValueError("%s must be true or false, got %r" % (key, v))
    return v


class SimCtl:
    """Control server for a SimBoard. `agent` (optional) answers status()
    for `get` and hang()/command() for the commands that need it."""

    def __init__(self, board, port, agent=None, vhost=None, addr="127.0.0.1"):
        if type(port) is not int or not 0 < port < 65536:
            raise ValueError("control port %r must be 1..65535" % (port,))
        self.board = board
        self.agent = agent
        self.vhost = vhost
        self.port = port
        self._clients = []
        self.requests = 0
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(addr, port)[0][-1])
        s.listen(2)
        s.setblocking(False)
        self._srv = s

    def close(self):
        for c in self._clients:
            c.sock.close()
        self._clients = []
        self._srv.close()

    # -- polling (bounded: one accept, one recv per client, a few commands)
    def poll(self):
        vh = self.vhost
        if vh is not None and vh.flash_cut():
            # a power cut swallowed by some `except Exception`: the board is dead
            raise Exit(vh.EXIT_POWER)
        try:
            cs, _ = self._srv.accept()
            if len(self._clients) >= _MAX_CLIENTS:
                cs.close()
            else:
                cs.setblocking(False)
                self._clients.append(_Client(cs))
        except OSError as e:
            if e.errno != _EAGAIN:
                raise
        budget = _CMDS_PER_POLL
        for c in self._clients[:]:
            if not self._io(c):
                c.sock.close()
                self._clients.remove(c)
                continue
            while budget and b"\n" in c.inbuf:
                line, _, c.inbuf = c.inbuf.partition(b"\n")
                budget -= 1
                self._answer(c, line)
            if len(c.inbuf) > _MAX_LINE:
                c.inbuf = b""
                c.out += b'{"ok": false, "error": "request line longer than %d bytes"}\n' % _MAX_LINE
        return budget != _CMDS_PER_POLL

    def _io(self, c):
        if c.out:
            try:
                n = c.sock.send(c.out)
                c.out = c.out[n:]
            except OSError as e:
                if e.errno != _EAGAIN:
                    return False
        try:
            data = c.sock.recv(_RECV)
        except OSError as e:
            return e.errno == _EAGAIN
        if not data:
            return False
        c.inbuf += data
        return True

    def _answer(self, c, line):
        line = line.strip()
        if not line:
            return
        self.requests += 1
        rid = None
        after = None
        try:
            try:
                req = json.loads(line)
            except ValueError:
                raise ValueError("request is not JSON")
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            rid = req.get("id")
            name = req.get("cmd")
            if not isinstance(name, str):
                raise ValueError("missing 'cmd' (a string)")
            fn = getattr(self, "_c_" + name, None)
            if fn is None:
                raise ValueError("unknown cmd %r" % name)
            rep = fn(req)
            if name not in _QUERIES:
                save_world(self.board, self.vhost)
            if type(rep) is tuple:  # (reply, exit code to leave with after replying)
                rep, after = rep
            if rep is None:
                rep = {}
            rep["ok"] = True
        except Exit:
            raise
        except Exception as e:
            rep = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        if rid is not None:
            rep["id"] = rid
        c.out += json.dumps(rep).encode() + b"\n"
        if after is not None or (self.agent is not None and self.agent._hung):
            self._flush(c)   # nothing will poll this channel again
        if after is not None:
            raise Exit(after)

    def _flush(self, c):
        c.sock.setblocking(True)
        try:
            c.sock.send(c.out)
        except OSError:
            pass
        c.out = b""

    def _need_host(self):
        if self.vhost is None:
            raise ValueError("not running on a virtual board (no host)")
        return self.vhost

    # -- commands: vehicle, grid, faults
    def _c_ping(self, req):
        return {"pong": True}

    def _c_plug(self, req):
        st = req.get("state", "B")
        pp = req.get("pp_ohm")
        if pp is not None:
            pp = _num(req, "pp_ohm", lo=0)
        self.board.plug(st, diode=_bool(req, "diode", True),
                        max_current_a=_num(req, "max_current_a", 32, 0.1, 200), pp_ohm=pp)

    def _c_unplug(self, req):
        self.board.unplug()

    def _c_ev_state(self, req):
        self.board.ev_state(req.get("state"))

    def _c_short_cp(self, req):
        self.board.short_cp(_bool(req, "on", True))

    def _c_diode(self, req):
        on = _bool(req, "on", True)
        if not self.board.plugged:
            raise ValueError("no vehicle plugged")
        self.board.diode = on

    def _c_trip(self, req):
        self.board.trip()

    def _c_rcd_reset(self, req):
        self.board.rcd_reset()

    def _c_weld(self, req):
        self.board.weld()

    def _c_stick_open(self, req):
        self.board.stick_open()

    def _c_repair(self, req):
        self.board.repair()

    def _c_grid(self, req):
        b = self.board
        self.board.grid(_num(req, "voltage_v", b.grid_v, 0, 500), req.get("phases", b.phases))

    def _c_temperature(self, req):
        self.board.set_temperature(_num(req, "c", None, -60, 200))

    def _c_overdraw(self, req):
        # a faulty vehicle drawing this much above the offer (next contactor change)
        self.board.ev_overdraw_a = float(_num(req, "a", 0, 0, 80))

    def _c_rcd_test_broken(self, req):
        # a dead RCD test winding: the next power-on self-test fails (rcd_no_trip)
        self.board.rcd_test_works = not _bool(req, "on", True)

    # -- outputs
    def _c_get(self, req):
        b = self.board
        v, i, e = b.meter()
        rep = {"duty": b.duty, "relay": b.relay_commanded, "contacts": b.contacts_closed,
               "voltage_v": v, "current_a": i, "energy_wh": e, "temperature_c": b.temperature_c(),
               "plugged": b.plugged, "ev": b.ev, "rcd_tripped": b.rcd_tripped,
               "wdt_feeds": b.wdt_feeds, "mem_free": _collect() if req.get("gc") else gc.mem_free(),
               "mem_alloc": gc.mem_alloc()}
        vh = self.vhost
        if vh is not None:
            rep["reset_cause"] = vh.reset_cause
            rep["device_id"] = vh.device_id
            # heap the emulated ROM partitions' mapping takes (flash on a board)
            rep["rom_heap"] = getattr(vh, "rom_heap", 0)
            rep["rom_script"] = getattr(vh, "rom_script", 0)   # the vboard ROM script's share
        a = self.agent
        if a is not None:
            a.status_into(rep)
            bi = getattr(a, "bootinfo", None) or {}
            rep["rom"] = bi.get("rom")     # True: code from the ROMFS image, else why not
        return rep

    # -- board life
    def _c_reset(self, req):
        return {}, self._need_host().EXIT_RESET

    def _c_power_cycle(self, req):
        return {}, self._need_host().EXIT_POWER

    def _c_power_cut_after(self, req):
        n = _num(req, "writes", None, 1, 10000000)
        if type(n) is not int:
            raise ValueError("writes must be an int")
        self._need_host().cut_after(n)
        return {"writes": n}

    def _c_hang(self, req):
        if self.agent is None:
            raise ValueError("no agent to hang")
        self.agent.hang()

    def _c_reset_stats(self, req):
        if self.agent is not None:
            self.agent.reset_stats()

    def _c_tag(self, req):
        # an RFID card held to the reader: idTag (OCPP: Authorize.req first)
        if self.agent is None:
            raise ValueError("no agent")
        self.agent.tag(req.get("tag"))

    def _c_command(self, req):
        # the agent's backend command handler, without MQTT (tests, demo)
        if self.agent is None:
            raise ValueError("no agent")
        name = req.get("name")
        if not isinstance(name, str):
            raise ValueError("'name' must be a string")
        payload = req.get("payload", {})
        return {"reply": self.agent.command(name, payload)}


class _Wdt:
    # wraps the board's watchdog so that the host tool sees the feeds
    def __init__(self, board, vhost):
        self._start = board.wdt_start
        self._feed = board.wdt_feed
        self._vh = vhost

    def start(self, ms):
        ms = self._vh.wdt_override or ms   # the virtual board's watchdog period, if set
        self._start(ms)
        self._vh.wdt_start(ms)

    def feed(self):
        self._feed()
        self._vh.wdt_feed()


def _reset(vhost):
    def reset():
        raise Exit(vhost.EXIT_RESET)
    return reset


def save_world(board, vhost):
    """Keep the simulated world (vehicle, grid, faults, meter) with the host
    tool, so that a reset of the board does not unplug the vehicle."""
    if vhost is None:
        return
    d = {}
    for k in _WORLD:
        d[k] = getattr(board, k)
    d["contacts_closed"] = board.welded and board.contacts_closed
    # a trip caused by the test winding alone ends with the test current,
    # which a reset stops: the next boot's self-test must not find it
    d["rcd_tripped"] = board.rcd_tripped and not board._test_trip
    vhost.save_world(json.dumps(d))


def load_world(board, vhost):
    text = vhost.load_world()
    if not text:
        return False
    try:
        d = json.loads(text)
    except ValueError:
        return False
    for k in _WORLD:
        if k in d:
            setattr(board, k, d[k])
    board.contacts_closed = bool(d.get("contacts_closed"))
    board._update()
    return True


_active = []


def attach(board, agent=None, vhost=None):
    """On a virtual board: route board.reset() to a process reset, the
    watchdog to the host tool, and start the control server. Returns the
    SimCtl, or None when there is no host (plain unix port, tests)."""
    vh = vhost if vhost is not None else host()
    if vh is None:
        return None
    while _active:      # an earlier run in this process (the bootstrap restarted the agent)
        try:
            _active.pop().close()
        except Exception:
            pass
    load_world(board, vh)
    w = _Wdt(board, vh)
    board.wdt_start = w.start
    board.wdt_feed = w.feed
    board.reset = _reset(vh)
    if not vh.control_port:
        return None
    ctl = SimCtl(board, vh.control_port, agent, vh)
    _active.append(ctl)
    return ctl
