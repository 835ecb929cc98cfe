# The agent: the fixed-period control loop of the charger and, in the rest of
# each period, the bounded background work (MQTT link, update job, health
# checks of a trial boot, reports, the virtual board's control channel).
#
# One period = sense -> Evse.step -> apply -> feed the watchdog. That part
# allocates nothing, and any exception in it opens the contactor and is
# re-raised (the bootstrap counts the crash). The background part runs within
# what is left of the period, one task after the other (the first task
# rotates, so a slow one cannot starve the rest); its errors are caught,
# counted and reported, and never stop the control loop.
import sys
import time
import json
from micropython import const
from firmware.evse import Evse, Sense
from firmware import report

PERIOD_MS = const(20)
_MARGIN_MS = const(4)          # background work stops this long before the deadline
_WDT_MS = const(8000)
_RESET_DELAY_MS = const(1500)  # a reset waits at most this long for the link to flush
_RESET_MAX_MS = const(9000)    # ... and for the contactor (C1 timeout 6 s + margin)
_ERR_PRINT = const(5)          # first background errors printed in full, then counted
_SELFTEST_TICKS = const(10)
_AUTO = const(-1)              # "build it from the configuration"


def load_config(root="/"):
    # read once at start; firmware/config.py is not kept loaded (heap, as
    # commands.config_module): get_config/set_config import it again
    had = "firmware.config" in sys.modules
    from firmware import config
    try:
        return config.load(root)
    finally:
        if not had:
            _drop("firmware", "config")


def _drop(pkg, name):
    # forget module pkg.name (its heap goes back once nothing refers to it)
    sys.modules.pop(pkg + "." + name, None)
    p = sys.modules.get(pkg)
    if p is not None and hasattr(p, name):
        delattr(p, name)


def _opt(name):
    # an optional part of the package (a reduced build may leave it out)
    try:
        return __import__(name, None, None, ("x",))
    except ImportError as e:
        if name.rpartition(".")[2] not in str(e):
            raise    # the module exists but something inside it is missing
        return None


def _have(name):
    # whether module `name` is there, without importing it (heap: the
    # on-demand parts are not loaded at start); else the import tells
    f = name.replace(".", "/")
    import os
    for p in sys.path:
        for ext in (".mpy", ".py"):
            try:
                os.stat((p + "/" if p else "") + f + ext)
                return True
            except OSError:
                pass
    return _opt(name) is not None


def _wall_clock():
    # UNIX seconds when the port's clock is the UNIX epoch (unix port), else unknown
    return time.time if time.gmtime(0)[0] == 1970 else None


class Agent:
    """The charger agent. tick(now_ms) runs one control period; loop() runs
    periods on a fixed schedule. The optional parts (link, updater, sessions,
    commands, health) are built from cfg when left to their default, or
    passed in (None = without). `boot` is the bootstrap module (import boot)."""

    def __init__(self, board, cfg, root="/", bootinfo=None, *, link=_AUTO, updater=_AUTO,
                 sessions=_AUTO, commands=_AUTO, health=_AUTO, ha=_AUTO, ctl=None, boot=None,
                 ocpp=_AUTO,
                 period_ms=PERIOD_MS, wdt_ms=_WDT_MS, clock=None):
        self.board = board
        self.cfg = cfg
        self.root = root
        self.bootinfo = bootinfo or {}
        self.period_ms = period_ms
        self.wdt_ms = wdt_ms
        self._clock = clock or time.ticks_ms   # wall clock of the work budget
        self._boot = boot
        # rating and ventilation are installer settings (constructor only);
        # now_ms is board.ticks_ms(): the core wraps with this port's ticks period
        self.evse = Evse(cfg.get("max_current_a", 32), ventilation=bool(cfg.get("ventilation")),
                         fallback_current_a=cfg.get("fallback_current_a", 6),
                         require_auth=bool(cfg.get("require_auth")),
                         period_ms=period_ms, ticks_period=time.ticks_add(0, -1) + 1,
                         selftest=True,   # every boot: the power-on self-test
                         rcd_selftest=cfg.get("rcd_selftest", True) is not False)
        self._rcdt = False        # RCD test winding as last driven (power-on self-test)
        self._bg_sense = None     # True: the board's sense_into leaves current/temperature
        self.sense = Sense(12000, None, None, False, False)
        self.cmd = None           # the Command of the last step (the same object each time)
        self._duty = None         # duty last written to the CP output
        self._relay = False
        self._hung = False
        self.ticks = 0
        self.errors = 0
        self.last_error = cfg.get("fault")   # no valid configuration: why no current is offered
        self.loop_max_ms = 0      # longest gap between two control steps (loop())
        self.loop_last_ms = 0
        self.work_max_ms = 0      # longest tick (control + background)
        self.overruns = 0
        self._now = board.ticks_ms()
        self._reset_at = None
        self._reset_kind = None
        self._resetting = False
        self.telemetry_ms = cfg.get("telemetry_ms", 10000)
        self._tele_at = None
        self._watch = report.StateWatch()
        self._rot = 0
        self.confirmed = None     # trial boot: None undecided, True confirmed, False rolled back
        self._max_loop_ms = None
        self._selftest = False
        self.ocpp = None          # built after the updater, which may report at once
        self.sessions = self._build_sessions() if sessions is _AUTO else sessions
        self.link = self._build_link(self._now) if link is _AUTO else link
        self.updater = self._build_updater() if updater is _AUTO else updater
        self.commands = self._build_commands() if commands is _AUTO else commands
        self.ocpp = self._build_ocpp(self._now) if ocpp is _AUTO else ocpp
        self.health = self._build_health(self._now) if health is _AUTO else health
        self.ha = self._build_ha() if ha is _AUTO else ha   # Home Assistant discovery
        self.ctl = ctl
        if self.link is not None:
            self.link.on_message = self._on_message
            if self.sessions is not None:
                self.link.session_log = self.sessions
        self._tasks = (self._t_ctl, self._t_link, self._t_ocpp, self._t_sessions, self._t_state,
                       self._t_telemetry, self._t_update, self._t_health, self._t_reset)

    # -- building the optional parts ------------------------------------------
    def _build_sessions(self):
        oc = self.cfg.get("ocpp")
        if oc and oc.get("url"):
            # the OCPP link's transaction queue holds the module anyway
            m = _opt("firmware.sessionlog")
            return None if m is None else m.SessionLog(self.root)
        if not _have("firmware.sessionlog"):
            return None
        from firmware import lazy   # loaded only while records wait (firmware/lazy.py)
        return lazy.Sessions(self.root)

    def _build_link(self, now):
        mq = self.cfg.get("mqtt")
        if not mq or not mq.get("host"):
            return None
        m = _opt("firmware.mqtt")
        if m is None:
            return None
        bi = self.bootinfo
        will = json.dumps(report.offline(bi.get("version"), bi.get("slot"))).encode()
        return m.Link(mq, self.cfg["device_id"], now, will=will)

    def _build_ocpp(self, now):
        # the OCPP 1.6J link (firmware/ocpp/), beside or instead of MQTT
        oc = self.cfg.get("ocpp")
        if not oc or not oc.get("url"):
            return None
        m = _opt("firmware.ocpp.link")
        return None if m is None else m.Link(oc, self.cfg["device_id"], self, self.root, now)

    def _build_updater(self):
        # the OTA chain is imported only while a job exists (firmware/ota/ondemand.py)
        m = _opt("firmware.ota.ondemand")
        if m is None:
            return None
        job = m.OnDemandUpdater(self.root, self.cfg.get("board"),
                                self.bootinfo.get("version") or (0, 0, 0, 0), _wall_clock(),
                                on_status=self._on_fw_status, before_install=self._quiesce,
                                links_busy=self._links_busy, feed=self._feed_wdt)
        job.resume()
        return job

    def _build_commands(self):
        # firmware/commands.py is loaded per command (firmware/lazy.py)
        had = "firmware.commands" in sys.modules
        if not _have("firmware.commands"):
            return None
        if not had and "firmware.commands" in sys.modules:
            _drop("firmware", "commands")
        from firmware import lazy
        return lazy.Commands(self.evse, self.updater, self.root, self._on_reset, self._config_changed)

    def _build_ha(self):
        link = self.link
        if link is None or not hasattr(link, "send_now") or not self.cfg.get("ha_discovery", True):
            return None
        # firmware/hadisco.py is loaded while a round of configs goes out (firmware/lazy.py)
        had = "firmware.hadisco" in sys.modules
        if not _have("firmware.hadisco"):
            return None
        if not had and "firmware.hadisco" in sys.modules:
            _drop("firmware", "hadisco")
        from firmware import lazy
        bi = self.bootinfo
        return lazy.Discovery(link, self.cfg["device_id"], self.cfg.get("board", "sim"),
                           report.version_str(bi.get("version")), bi.get("slot"),
                           self.cfg.get("max_current_a", 32))

    def _build_health(self, now):
        if not self.bootinfo.get("trial"):
            return None
        m = _opt("firmware.ota.health")
        if m is None:
            return None
        hc = self.cfg.get("health") or {}
        trial_ms = int(hc.get("trial_s", 120)) * 1000
        self._max_loop_ms = hc.get("max_loop_ms")
        checks = {"agent_started": True, "loop_ticks": 100, "cp_selftest": True,
                  "stable_ms": trial_ms}
        if self.evse.selftest != "ok":
            checks["selftest"] = True   # the charging core's power-on self-test
        link = self.link if self.link is not None else self.ocpp
        if link is not None and hc.get("need_mqtt", True):
            checks["backend"] = (lambda: link.connected, trial_ms)
        if self.cfg.get("fault"):   # no valid configuration: nothing proves the new slot works
            checks["backend"] = (lambda: False, trial_ms)
        h = m.Health(checks, trial_ms + 30000, now)
        h.agent_started()
        return h

    # -- the control period -------------------------------------------------------
    def tick(self, now_ms, until_ms=None):
        """One control period at now_ms (board clock). Background work stops
        at until_ms (self's wall clock, time.ticks_ms) when given. Returns the
        Command applied."""
        try:
            b = self.board
            s = self.sense
            b.sense_into(s)
            c = self.evse.step(now_ms, s)
            self.cmd = c
            d = c.duty
            if d != self._duty:
                b.cp_output(d)
                self._duty = d
            b.relay(c.relay)
            self._relay = c.relay
            if c.rcd_test != self._rcdt:
                self._rcdt = c.rcd_test
                try:
                    b.rcd_test(c.rcd_test)
                except OSError:
                    pass   # no test winding fitted: the self-test fails (rcd_no_trip), closed

            if not self._hung:
                b.wdt_feed()
        except BaseException:
            self._safe()
            raise
        self._now = now_ms
        self.ticks += 1
        if self.health is not None:
            self.health.tick()
        self._background(now_ms, until_ms)
        return c

    def _safe(self):
        # the relay opens on any doubt
        try:
            self.board.relay(False)
        except BaseException:
            pass
        self._relay = False

    def _background(self, now, until):
        tasks = self._tasks
        n = len(tasks)
        i = self._rot
        self._rot = (i + 1) % n
        clock = self._clock
        for _ in range(n):
            if until is not None and time.ticks_diff(until, clock()) <= 0:
                return
            try:
                tasks[i](now)
            except Exception as e:
                if self._resetting:
                    raise    # board.reset() of a backend that raises (SimReset)
                self._error(e)
            except BaseException:
                self._safe()
                raise
            i = (i + 1) % n

    def _error(self, e):
        self.errors += 1
        self.last_error = "%s: %s" % (type(e).__name__, e)
        if self.errors <= _ERR_PRINT:
            print("agent: background error:")
            sys.print_exception(e)
        h = self.health
        if h is not None and self.confirmed is None:
            h.exception(e)

    # -- background tasks -------------------------------------------------------------
    def _t_ctl(self, now):
        if self.ctl is not None:
            self.ctl.poll()
        # boards whose sense_into leaves the meter current and temperature out:
        # refresh them here, about once a second (these reads may allocate)
        s = self.sense
        if self._bg_sense is None:
            self._bg_sense = s.current_a is None and s.temperature_c is None
        if self._bg_sense and self.ticks % 50 == 1:
            b = self.board
            s.current_a = b.meter()[1]
            s.temperature_c = b.temperature_c()

    def _t_link(self, now):
        if self.link is not None:
            self.link.poll(now)
            if self.ha is not None:
                self.ha.poll()      # at most one discovery config per period

    def _t_ocpp(self, now):
        if self.ocpp is not None:
            self.ocpp.poll(now)

    def _t_sessions(self, now):
        rec = self.evse.pop_finished()
        if rec is None:
            return
        if self.ocpp is not None:
            self.ocpp.session_ended(rec)   # StopTransaction (queued on flash)
        rec = report.session(rec, self.cfg.get("device_id"))
        if self.sessions is not None:
            self.sessions.append(rec)   # the link publishes it (QoS 1) from the log
        elif self.link is not None:
            self.link.publish("session", rec, False, 1)

    def _t_state(self, now):
        c = self.cmd
        if c is None or self.link is None:
            return
        if self._watch.changed(c, c.session_active, self.evse.paused):
            self.link.publish("state", self.state_payload(), True)

    def _t_telemetry(self, now):
        if self.link is None or not self.telemetry_ms:
            return
        if self._tele_at is not None and time.ticks_diff(now, self._tele_at) < 0:
            return
        self._tele_at = time.ticks_add(now, self.telemetry_ms)
        self.link.publish("telemetry", self.telemetry_payload())

    def _t_update(self, now):
        u = self.updater
        if u is None or self._reset_at is not None:
            return
        c = self.cmd
        idle = c is not None and not c.session_active and not self._relay
        if u.poll(now, idle, self._in_window()):
            self._on_reset("hard")   # installed: reboot into the trial slot

    def _in_window(self):
        w = self.cfg.get("install_window")
        if not w:
            return True
        wall = _wall_clock()
        if wall is None:
            return False   # no clock: the window cannot be honoured, so wait
        t = time.localtime(int(wall()))
        m = t[3] * 60 + t[4]
        a, b = w[0], w[1]
        return a <= m < b if a <= b else (m >= a or m < b)

    def _t_health(self, now):
        h = self.health
        if h is None or self.confirmed is not None:
            return
        if not self._selftest and self.ticks >= _SELFTEST_TICKS:
            self._selftest = True
            hi = self.sense.cp_high_mv
            h.cp_selftest(hi is not None and hi > 1500 and self.cmd.fault != "cp_error")
        if "selftest" in h.checks:
            h.selftest(self.evse.selftest)
        r = h.poll(now)
        if r is None:
            return
        from firmware.ota import health
        bi = self.bootinfo
        st = health.settle(r, h.reason, self.root, bi.get("slot"), bi.get("version"))
        if r is True:
            self.confirmed = True
            self.health = None               # decided: its checks and module go (heap for the next update)
            _drop("firmware.ota", "health")
            print("agent: trial boot confirmed")
            if st is not None:
                self._on_fw_status(st, None, None, None)
            self._status()
            return
        self.confirmed = False
        print("agent: trial boot failed (%s): rolling back" % h.reason)
        self._on_reset("hard")

    def _t_reset(self, now):
        if self._reset_at is None:
            return
        if self._relay and time.ticks_diff(now, self._reset_max) < 0:
            return    # current may flow: the charging core opens after C1, not we
        self._t_sessions(now)   # the session record goes out (to the log) first
        link = self.link
        flushed = link is None or not (link.connected or getattr(link, "resuming", False)) \
            or not link.pending()
        oc = self.ocpp
        if oc is not None and (oc.connected or getattr(oc, "resuming", False)) and oc.pending():
            flushed = False
        if flushed or time.ticks_diff(now, self._reset_at) >= 0:
            self._safe()
            if link is not None:
                link.close(now)
            if oc is not None:
                oc.close(now)
            self._resetting = True
            if self._reset_kind == "soft":
                raise SystemExit(0)   # the port soft-resets (boot.py, main.py again)
            self.board.reset()

    # -- callbacks ----------------------------------------------------------------------
    def _on_message(self, name, payload):
        if self.commands is None:
            return
        rep = self.commands.handle(name, payload)
        if rep is not None and self.link is not None:
            self.link.publish("reply", rep)

    def _on_fw_status(self, status, rid=None, progress=None, reason=None):
        if self.ocpp is not None:
            self.ocpp.firmware_status(status, rid, why=reason)
        if self.link is not None:
            self.link.publish("firmware", report.firmware(status, rid, progress, reason), True, 1)

    def _on_reset(self, kind="hard"):
        """Reset once the pending messages are out (at most _RESET_DELAY_MS).
        A running session is ended first: PWM off, the contactor opens when
        the EV leaves C or at the C1 timeout (the charging core), its record
        is written, then the reset (at most _RESET_MAX_MS after the request)."""
        self._reset_kind = kind
        self._reset_at = time.ticks_add(self._now, _RESET_DELAY_MS)
        self._reset_max = time.ticks_add(self._now, _RESET_MAX_MS)
        if self.evse.session is not None:
            self.evse.stop_session("reset")

    def _links_busy(self):
        # a connected link with messages not yet out (the update's INSTALLING among
        # them): the install step holds its suspend a moment for them
        for part in (self.link, self.ocpp):
            if part is not None and getattr(part, "connected", False) and part.pending():
                return True
        return False

    def _feed_wdt(self):
        # the install step's progress (updater `feed`): one long step, the
        # charger idle; a hung agent (hang()) is not fed
        if not self._hung:
            self.board.wdt_feed()

    def _quiesce(self):
        # the update's install step (charger idle): MQTT and OCPP traffic stops
        # and their buffers go back to the heap (contiguous room for the
        # unpack); they reconnect at once after
        for part in (self.link, self.ocpp):
            fn = getattr(part, "suspend", None)
            if fn is not None:
                fn(self._now)

    def _config_changed(self, cfg):
        # telemetry period at once; the rest (limits, broker) at the next start
        self.cfg = cfg
        self.telemetry_ms = cfg.get("telemetry_ms", self.telemetry_ms)

    def command(self, name, payload):
        """A backend command without MQTT (control channel, tests): the reply."""
        if self.commands is None:
            raise ValueError("no command handler in this build")
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        return self.commands.handle(name, payload)

    def tag(self, tag):
        """An idTag presented at the charger (RFID): with OCPP it is
        authorized by the CSMS (Authorize.req), else it authorizes at once."""
        if self.ocpp is not None:
            self.ocpp.present_tag(tag)
        else:
            self.evse.authorize(tag)

    def hang(self):
        """Stop everything, the watchdog feed included (health-check tests)."""
        self._hung = True

    def reset_stats(self):
        self.loop_max_ms = self.work_max_ms = self.overruns = 0

    # -- reports ------------------------------------------------------------------------
    def state_payload(self):
        return report.state(self.cmd, self.evse.session, self.evse.paused)

    def telemetry_payload(self):
        b = self.board
        v, i, e = b.meter()
        ph = getattr(b, "phases", 1)
        s = self.evse.session
        return report.telemetry(v, i, round(v * i * ph, 1), round(e, 3), b.temperature_c(),
                                None if s is None else round(s["energy_wh"], 3))

    def _status(self):
        if self.link is not None:
            bi = self.bootinfo
            trial = bool(bi.get("trial")) and not self.confirmed
            self.link.publish("status", report.status(bi.get("version"), bi.get("slot"),
                                                      bi.get("reason"), trial,
                                                      bi.get("failed_version")), True)

    def status_into(self, d):
        """Fill dict d with the outputs and the loop figures (control channel)."""
        c = self.cmd
        if c is not None:
            d["state"] = c.state
            d["offered_a"] = c.current_a
            d["source"] = c.source
            d["fault"] = c.fault
            d["session_active"] = c.session_active
        d["session"] = self.evse.session
        d["paused"] = self.evse.paused
        d["selftest"] = self.evse.selftest
        bi = self.bootinfo
        d["slot"] = bi.get("slot")
        d["version"] = bi.get("version")
        d["trial"] = bool(bi.get("trial")) and not self.confirmed
        d["boot_reason"] = bi.get("reason")
        d["boots"] = bi.get("boots")
        d["ticks"] = self.ticks
        d["loop_max_ms"] = self.loop_max_ms
        d["loop_last_ms"] = self.loop_last_ms
        d["work_max_ms"] = self.work_max_ms
        d["overruns"] = self.overruns
        d["errors"] = self.errors
        d["last_error"] = self.last_error
        d["link"] = None if self.link is None else self.link.state
        d["ocpp"] = None if self.ocpp is None else self.ocpp.state
        d["firmware"] = None if self.updater is None else self.updater.status()

    # -- the real-time loop ----------------------------------------------------------------
    def start(self):
        """Arm the watchdog, report status and the outcome of the last update."""
        self.board.wdt_start(self.wdt_ms)
        self._status()
        if self.bootinfo.get("trial") or self.updater is None:
            return
        had = [m for m in ("health", "job") if "firmware.ota." + m in sys.modules]
        try:
            from firmware.ota import health
            r = health.boot_report(self.root)
            if r is not None:
                self._on_fw_status(r[0], r[1], None, r[2])
        except Exception as e:
            self._error(e)
        health = None
        for m in ("health", "job"):
            if m not in had:
                _drop("firmware.ota", m)   # read once per boot: not kept loaded (heap)

    def loop(self, periods=None):
        """Control periods every period_ms on ticks_add deadlines, `periods`
        times (forever when None). A simulated board (advance()) is moved
        along with the wall clock."""
        b = self.board
        adv = getattr(b, "advance", None)
        period = self.period_ms
        clock = self._clock
        deadline = prev = real = clock()
        n = 0
        while periods is None or n < periods:
            start = clock()
            if adv is not None:
                dt = time.ticks_diff(start, real)
                if dt > 0:
                    adv(dt)
                real = start
            if self._hung:
                self._hang_wait(period)
                continue
            gap = time.ticks_diff(start, prev)
            prev = start
            if n:
                self.loop_last_ms = gap
                if gap > self.loop_max_ms:
                    self.loop_max_ms = gap
                ml = self._max_loop_ms
                if ml and gap > ml and self.confirmed is None and self.health is not None:
                    self.health.slow_period(gap, start)
            deadline = time.ticks_add(deadline, period)
            self.tick(b.ticks_ms(), time.ticks_add(deadline, -_MARGIN_MS))
            end = clock()
            w = time.ticks_diff(end, start)
            if w > self.work_max_ms:
                self.work_max_ms = w
            wait = time.ticks_diff(deadline, end)
            if wait > 0:
                time.sleep_ms(wait)
            elif wait < -period:
                self.overruns += 1
                deadline = end    # more than a period late: resynchronise
            n += 1

    def _hang_wait(self, period):
        # hung: nothing runs and the watchdog starves. On a virtual board the
        # host tool plays the watchdog; a SimBoard's own one is checked too.
        time.sleep_ms(period)
        exp = getattr(self.board, "watchdog_expired", None)
        if exp is not None and exp():
            from firmware.hal import simctl
            vh = simctl.host()
            if vh is not None:
                raise simctl.Exit(vh.EXIT_WDT)

    def close(self):
        for part in (self.ctl, self.link, self.ocpp):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass


current = None   # the running Agent; after a Ctrl-C at the REPL, what it was doing (evsectl deploy reads it)


def run(bootinfo, root="/", board=None):
    """Entry point called by the bootstrap: the board and the agent from the
    configuration, then the loop, forever."""
    global current
    cfg = load_config(root)
    if board is None:
        from firmware import hal
        # without a valid configuration (cfg["board"] None) the port's own board
        # still drives its outputs to the safe state
        board = hal.create(cfg.get("board") or (sys.platform if sys.platform in ("esp32", "rp2")
                                                else "sim"))
    agent = Agent(board, cfg, root, bootinfo)
    current = agent
    if hasattr(board, "advance"):
        from firmware.hal import simctl
        agent.ctl = simctl.attach(board, agent)
    print("agent: %s slot %s version %s%s" % (cfg.get("device_id"), bootinfo.get("slot"),
                                              bootinfo.get("version"),
                                              " (trial)" if bootinfo.get("trial") else ""))
    try:
        agent.start()
        agent.loop()
    finally:
        agent._safe()
        agent.close()
