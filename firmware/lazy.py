# Parts of the agent that are idle most of the time, loaded only while they
# work and dropped from sys.modules after (the OTA chain does the same,
# firmware/ota/ondemand.py; the config store, agent.load_config): their heap
# goes back to the running agent (figures: docs/memory.md).
#
#   Commands   firmware/commands.py, for the handling of one backend command
#   Discovery  firmware/hadisco.py, while a round of Home Assistant discovery
#              configs goes out (after each connect, on HA's birth message)
#   Sessions   firmware/sessionlog.py, while finished-session records wait on
#              flash to be published (the log itself is on flash either way)
#
# A module that was already loaded when it is needed (a test imported it,
# or someone else holds it) is left loaded.
import sys
import gc


def _load(name):
    had = name in sys.modules
    if not had:
        # into a collected heap: the module's small objects fill the holes
        # of garbage instead of cutting up the free blocks (fragmentation)
        gc.collect()
    try:
        m = __import__(name, None, None, ("x",))
    except MemoryError:
        gc.collect()
        m = __import__(name, None, None, ("x",))
    return m, had


def drop(name, had=False):
    """Forget module `name` (sys.modules and its package's attribute) unless had."""
    if had:
        return
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    p = sys.modules.get(pkg)
    if p is not None and hasattr(p, attr):
        delattr(p, attr)


class Commands:
    """firmware.commands.Commands built for each command and dropped after
    it; the counters stay here."""

    def __init__(self, *args):
        self._args = args
        self.handled = self.refused = self.unanswered = 0
        self.last_error = None

    def handle(self, name, payload):
        m, had = _load("firmware.commands")
        c = m.Commands(*self._args)
        m = None
        c.defer = True
        c.handled, c.refused, c.unanswered, c.last_error = (self.handled, self.refused,
                                                              self.unanswered, self.last_error)
        try:
            reply = c.handle(name, payload)
            d = c.deferred
        finally:
            self.handled, self.refused, self.unanswered, self.last_error = (
                c.handled, c.refused, c.unanswered, c.last_error)
            c = None
            drop("firmware.commands", had)
        if d is not None:
            # update_firmware: the updater starts (and loads the OTA chain)
            # now that the command handler's heap is back; what it refuses
            # becomes the reply, as commands.py words it
            err = None
            try:
                d[0](d[1])
            except ValueError as e:
                err = str(e) or "bad value"
            except Exception as e:  # noqa - MemoryError loading the chain & co.
                sys.print_exception(e)
                err = "internal error: %s" % type(e).__name__
            d = None
            if err is not None:
                self.refused += 1
                self.last_error = err
                if reply is not None:
                    reply = {"id": reply["id"], "ok": False, "error": err}
        return reply


class Discovery:
    """firmware.hadisco.Discovery, loaded when a round of configs is due
    (a new connection of the link, or HA's birth message `online`) and
    dropped once the round is out. Same poll()/birth() as the real one."""

    def __init__(self, link, *args, prefix="homeassistant"):
        self.link = link
        self._args = args
        self.prefix = prefix
        self.rounds = 0          # complete rounds published
        self.loads = 0           # times hadisco.py was loaded (diagnostics, tests)
        self._d = None
        self._ups = -1           # link connection the last round was for
        self._again = False      # HA asked for the configs again
        link.subscribe_extra(prefix + "/status", self.birth)

    def _new(self):
        m, had = _load("firmware.hadisco")
        d = m.Discovery(self.link, *self._args, prefix=self.prefix)
        self.link.subscribe_extra(self.prefix + "/status", self.birth)   # ours, not d's
        return d, had

    def payload(self, i):
        """Config JSON of entity i (loads the module for the call)."""
        d, had = self._new()
        try:
            return d.payload(i)
        finally:
            d = None
            drop("firmware.hadisco", had)

    def birth(self, payload):
        if self._d is not None:
            self._d[0].birth(payload)
        elif payload == b"online":
            self._again = True

    def poll(self):
        link = self.link
        if not link.connected:
            return
        dh = self._d
        if dh is None:
            if link.ups == self._ups and not self._again:
                return
            self._again = False
            self._ups = link.ups
            dh = self._d = self._new()
            self.loads += 1
        d = dh[0]
        d.poll()
        if d.rounds:
            self.rounds += 1
            self._ups = link.ups
            self._d = None
            had = dh[1]
            d = dh = None
            drop("firmware.hadisco", had)


class Sessions:
    """firmware.sessionlog.SessionLog, kept loaded only while records wait
    to be published: built from flash at start, dropped when nothing waits
    (after the PUBACK of the last one), built again at the next append.
    The link uses len(), peek_line() and ack() as on a SessionLog."""

    def __init__(self, root="/", max_records=50):
        self._a = (root, max_records)
        self._log = None
        self._had = False
        self.loads = 0           # times the log was built from flash (diagnostics, tests)
        self._dropped = 0        # of logs built before
        self._open()
        self._idle()

    @property
    def dropped(self):
        log = self._log
        return self._dropped + (0 if log is None else log.dropped)

    def _open(self):
        log = self._log
        if log is None:
            m, self._had = _load("firmware.sessionlog")
            log = self._log = m.SessionLog(*self._a)
            self.loads += 1
        return log

    def _idle(self):
        log = self._log
        if log is not None and not len(log):
            self._dropped += log.dropped
            self._log = log = None
            drop("firmware.sessionlog", self._had)

    def __len__(self):
        log = self._log
        return 0 if log is None else len(log)

    def append(self, rec):
        return self._open().append(rec)

    def peek_line(self):
        log = self._log
        return None if log is None else log.peek_line()

    def peek(self):
        log = self._log
        return None if log is None else log.peek()

    def ack(self, seq=None):
        log = self._log
        if log is None:
            return False
        r = log.ack(seq)
        self._idle()
        return r

    def pop(self):
        rec = self.peek()
        if rec is not None:
            self.ack()
        return rec
