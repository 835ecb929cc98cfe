# Trial-boot health checks and the status to report after a (failed) update.
#
# A freshly installed slot runs on trial (boot record: pending, trials left).
# The agent feeds Health with what it observes and polls it:
#
#   h = Health({"agent_started": True, "loop_ticks": 100, "cp_selftest": True,
#               "backend": (link.connected, 30000), "stable_ms": 60000},
#              timeout_ms=120000, start_ms=now)
#   h.agent_started(); h.tick() (each control step); h.cp_selftest(ok);
#   h.selftest(result) (check "selftest": the charging core's power-on self-test);
#   h.exception(e) (uncaught exception)
#   h.slow_period(gap_ms, now_ms) (a loop period over the limit: its own
#       reason, and only `slow_count` of them within `slow_window_ms` fail
#       the trial - a busy host is slow, not broken)
#   r = h.poll(now_ms)  # None: undecided, True: healthy, False: h.reason
#   settle(r, h.reason, root)   # True -> boot.confirm, False -> boot.rollback
#
# boot_report(root) tells the agent, at each start, which firmware status to
# publish for the last update: Installed once confirmed, InstallationFailed
# with the reason after a rollback (the old slot reports why).
import time
import boot
from firmware.ota import job

_KNOWN = ("agent_started", "loop_ticks", "cp_selftest", "backend", "stable_ms", "selftest")
SLOW_COUNT = 5            # slow periods ...
SLOW_WINDOW_MS = 10000    # ... within this window fail a trial


class Health:
    def __init__(self, checks, timeout_ms, start_ms=0, slow_count=SLOW_COUNT,
                 slow_window_ms=SLOW_WINDOW_MS):
        if not isinstance(checks, dict):
            raise ValueError("checks must be a dict")
        for k in checks:
            if k not in _KNOWN:
                raise ValueError("unknown health check %r" % (k,))
        b = checks.get("backend")
        if b is not None and not (isinstance(b, tuple) and len(b) == 2 and callable(b[0])):
            raise ValueError("backend check is (callable, within_ms)")
        if not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError("timeout_ms must be a positive int")
        self.checks = checks
        self.timeout_ms = timeout_ms
        self.start = start_ms
        self.ticks = 0
        self.reason = None
        self.result = None
        self._agent = False
        self._cp = None
        self._st = None           # charging core self-test: None running, "ok", or why it failed
        self._backend = False
        self._exc = None
        if not isinstance(slow_count, int) or not 1 <= slow_count <= 64 \
                or not isinstance(slow_window_ms, int) or slow_window_ms <= 0:
            raise ValueError("slow_count 1..64 and slow_window_ms > 0")
        self._slow = [0] * slow_count      # ring of the last slow periods' times
        self._nslow = 0
        self._slow_win = slow_window_ms
        self._slow_fail = None

    # -- observations -------------------------------------------------------
    def agent_started(self):
        self._agent = True

    def tick(self):
        self.ticks += 1

    def cp_selftest(self, ok):
        self._cp = bool(ok)

    def selftest(self, result):
        # the charging core's power-on self-test (Evse.selftest)
        self._st = result

    def exception(self, exc):
        if self._exc is None:
            self._exc = exc if isinstance(exc, str) else type(exc).__name__

    def slow_period(self, gap_ms, now_ms):
        """A control period of gap_ms (over the limit) ended at now_ms. The trial
        fails once len(ring) of them fall within the window."""
        r = self._slow
        n = len(r)
        r[self._nslow % n] = now_ms
        self._nslow += 1
        if self._slow_fail is None and self._nslow >= n:
            oldest = r[self._nslow % n]
            if time.ticks_diff(now_ms, oldest) <= self._slow_win:
                self._slow_fail = "slow_loop: %d periods over limit in %d ms (last %d ms)" % (
                    n, time.ticks_diff(now_ms, oldest), gap_ms)

    # -- verdict ------------------------------------------------------------
    def _elapsed(self, now_ms):
        return time.ticks_diff(now_ms, self.start)

    def missing(self, now_ms):
        """Names of the checks not passed yet."""
        c = self.checks
        out = []
        if c.get("agent_started") and not self._agent:
            out.append("agent_started")
        n = c.get("loop_ticks")
        if n and self.ticks < n:
            out.append("loop_ticks")
        if c.get("cp_selftest") and self._cp is not True:
            out.append("cp_selftest")
        if c.get("selftest") and self._st != "ok":
            out.append("selftest")
        if c.get("backend") is not None and not self._backend:
            out.append("backend")
        m = c.get("stable_ms")
        if m and self._elapsed(now_ms) < m:
            out.append("stable_ms")
        return out

    def poll(self, now_ms):
        if self.result is not None:
            return self.result
        el = self._elapsed(now_ms)
        c = self.checks
        if self._exc is not None:
            return self._verdict(False, "uncaught_exception: %s" % self._exc)
        if self._slow_fail is not None:
            return self._verdict(False, self._slow_fail)
        if c.get("cp_selftest") and self._cp is False:
            return self._verdict(False, "cp_selftest_failed")
        if c.get("selftest") and self._st is not None and self._st != "ok":
            return self._verdict(False, "selftest_failed: %s" % self._st)
        b = c.get("backend")
        if b is not None and not self._backend:
            try:
                self._backend = bool(b[0]())
            except Exception:
                self._backend = False
            if not self._backend and el >= b[1]:
                return self._verdict(False, "backend_unreachable")
        miss = self.missing(now_ms)
        if not miss:
            return self._verdict(True, None)
        if el >= self.timeout_ms:
            return self._verdict(False, "health_timeout: " + ",".join(miss))
        return None

    def _verdict(self, ok, reason):
        self.result = ok
        self.reason = reason
        return ok


def settle(result, reason, root="/", slot=None, version=None):
    """Apply a health verdict to the boot record. True: confirm (raises the
    security-counter floor) and return 'Installed' - only when `slot` and
    `version` (what ran the trial, from bootinfo) are the pending ones. False:
    roll back (the caller then reboots into the previous slot) and return
    None. None: None."""
    if result is True:
        if boot.confirm(root, slot, version):
            from firmware.ota import evidence   # only now: the trial's heap stays small
            evidence.mark_confirmed(boot.read_record(root).active, root)
            job.clear_job(root)
            return job.INSTALLED
        return None
    if result is False:
        boot.rollback(reason or "health_failed", root)
    return None


def boot_report(root="/"):
    """At start-up: (status, request_id, reason) to publish for the last
    update, or None. Clears what it reports (job file, record reason), so a
    status is reported once. While a trial boot is undecided: None."""
    rec = boot.read_record(root)
    jb = job.load_job(root)
    state = jb.get("state") if jb else None
    # a request id belongs to the report only if that job installed something
    rid = jb.get("id") if state in ("installing", "rebooting") else None
    if jb is not None and state in ("installing", "rebooting") and rec.pending == jb.get("slot"):
        return None  # on trial: the health checks decide
    if rec.reason is not None:
        why = rec.reason
        if rec.failed_version:
            job.remember_failed(rec.failed_version, rec.reason, root)
            why = "%s (version %s)" % (why, rec.failed_version)
        boot.clear_reason(root)
        if jb is not None and state == "rebooting":
            job.clear_job(root)
        return job.INSTALLATION_FAILED, rid, why
    if jb is not None and state == "rebooting":
        job.clear_job(root)
        if rec.active == jb.get("slot") and rec.pending is None:
            return job.INSTALLED, rid, None
        return job.INSTALLATION_FAILED, rid, "trial boot lost"
    if jb is not None and state == "installing" and rec.active == jb.get("slot") \
            and rec.pending is None:
        # power cut between set_pending and the job's last write, then confirmed
        job.clear_job(root)
        return job.INSTALLED, rid, None
    return None
