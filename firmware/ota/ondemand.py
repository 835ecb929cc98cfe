# The update job, loaded on demand.
#
# The OTA chain (updater, fetch, image, ed25519, sha512, bundle, slots) is the
# largest part of the agent's code. It is needed only while an update job
# exists, so it is imported when a job is started or found on flash after a
# reboot, and dropped from sys.modules again when the job has ended; the heap
# it used goes back to the agent. Same interface as updater.UpdateJob for the
# agent and the commands: start(), poll(), status(), resume(), cancel().
import sys

# firmware/ota/job.py (the job file's helpers, ~3 KB on mp32) is read at
# start (resume) and by the chain; it is not kept loaded either
_MODULES = ("health", "updater", "fetch", "image", "ed25519", "wnaf", "sha512", "bundle", "slots",
            "evidence", "romslot", "romfs", "job")
_IDLE = "Idle"   # job.IDLE


def release():
    """Drop the OTA chain from sys.modules (objects still referenced stay alive)."""
    pkg = sys.modules.get("firmware.ota")
    for name in _MODULES:
        sys.modules.pop("firmware.ota." + name, None)
        if pkg is not None and hasattr(pkg, name):
            delattr(pkg, name)


class OnDemandUpdater:
    def __init__(self, root, board, running_version, clock, on_status=None, **kw):
        self.root = root
        self._args = (board, running_version, clock)
        self._kw = kw
        self.on_status = on_status
        self.job = None
        self._status = _IDLE
        self.loads = 0                # times the OTA chain was imported (diagnostics)

    @property
    def loaded(self):
        return self.job is not None

    @property
    def active(self):
        return self.job is not None and self.job.active

    def _report(self, status, request_id, progress, reason):
        self._status = status
        if self.on_status is not None:
            self.on_status(status, request_id, progress, reason)

    def _load(self):
        if self.job is None:
            # collect first: the chain's many small objects then fill the
            # holes garbage leaves, and its larger ones still find blocks
            # (loaded into an uncollected heap, a 64-bit vboard with 200 KB
            # free found no 1280-byte block after a few commands)
            import gc
            gc.collect()
            from firmware.ota import updater
            board, version, clock = self._args
            self.job = updater.UpdateJob(self.root, None, board, version, clock,
                                         on_status=self._report, **self._kw)
            self.loads += 1
        return self.job

    def _unload(self):
        self.job = None
        release()

    def _idle(self):
        j = self.job
        return j is not None and not j.active and not j.reboot_requested

    def resume(self):
        """After a boot: continue a job persisted on flash, if there is one."""
        had = "firmware.ota.job" in sys.modules
        from firmware.ota import job as _job
        j = _job.load_job(self.root)
        if j is None:
            _job.clean_orphans(self.root)     # garbled job file: drop its staged image
        _job = None
        if not had:
            sys.modules.pop("firmware.ota.job", None)
            pkg = sys.modules.get("firmware.ota")
            if pkg is not None and hasattr(pkg, "job"):
                delattr(pkg, "job")
        if j is None:
            return False
        if j.get("state") == "rebooting":
            return False     # nothing to do, or the trial boot's verdict (health.py) is awaited
        ok = self._load().resume()
        if not ok and self._idle():
            self._unload()
        return ok

    def start(self, request):
        try:
            return self._load().start(request)
        finally:
            if self._idle():
                self._unload()

    def cancel(self):
        if self.job is None:
            return False
        r = self.job.cancel()
        if self._idle():
            self._unload()
        return r

    def poll(self, now_ms, charging_idle=True, in_window=True):
        j = self.job
        if j is None:
            return False
        reboot = j.poll(now_ms, charging_idle, in_window)
        if not reboot and self._idle():
            self._unload()
        return reboot

    def status(self):
        return self._status if self.job is None else self.job.status()
