# The over-the-air update job: a cooperative state machine (docs/ota.md).
#
#   job = UpdateJob(root, keys=None, board="sim", running_version="1.0.0",
#                   clock=wall_clock_s, on_status=publish)
#   job.resume()                      # at start-up: continue a persisted job
#   job.start(request)                # OCPP 1.6 SignedUpdateFirmware fields
#   if job.poll(now_ms, charging_idle, in_window): reboot()   # every loop
#
# Each poll() does a bounded step: one socket read (<= 1 KiB) + one flash write
# + hashing it, or one file read while re-checking a staged image after a
# reboot. The exception is the install step (unpacking into the inactive slot),
# which only runs when no charging session runs and the contactor is open.
# Statuses are OCPP 1.6 security-extension FirmwareStatus names, reported
# through on_status(status, request_id, progress_percent_or_None, reason).
from micropython import const
import gc
import os
import boot
from firmware.ota import bundle, fetch, image, slots

# status names, the job file and its helpers live in job.py (small: the trial
# boot and the on-demand loader use them without importing this module)
from firmware.ota.job import (IDLE, DOWNLOAD_SCHEDULED, DOWNLOADING, DOWNLOAD_PAUSED,  # noqa: F401
                              DOWNLOADED, DOWNLOAD_FAILED, SIGNATURE_VERIFIED,
                              INVALID_SIGNATURE, INSTALL_SCHEDULED, INSTALLING,
                              INSTALL_REBOOTING, INSTALLED, INSTALLATION_FAILED,
                              INSTALL_VERIFICATION_FAILED, JOB_FILE, KEYS_FILE,
                              failed_versions as load_failed,
                              load_job, save_job, clear_job, clean_orphans, path_of as _p,
                              remove_quietly as _remove)

# internal states (persisted as their names in the job file)
_NONE = const(0)
_SCHED = const(1)      # waiting for retrieveDateTime
_REHASH = const(2)     # re-feeding the staged bytes after a reboot
_DL = const(3)         # downloading
_PAUSED = const(4)     # waiting retryInterval
_HOLD_MS = const(5000)  # longest wait for the links to deliver before the unpack
_WAIT = const(5)       # verified, waiting for idle + window + installDateTime
_REBOOT = const(6)     # installed and set pending: the caller must reboot
_PSTATE = {_SCHED: "sched", _REHASH: "dl", _DL: "dl", _PAUSED: "dl", _WAIT: "verified",
           _REBOOT: "rebooting"}

_MAX_URL = const(512)
_MAX_RETRIES = const(100)
_MAX_INTERVAL = const(86400)
_DEFAULT_RETRIES = const(3)
_DEFAULT_INTERVAL = const(60)
_FIELDS = ("requestId", "location", "retrieveDateTime", "installDateTime", "retries",
           "retryInterval", "firmware", "signingCertificate", "signature", "force", "signingKey")
_RESERVE = const(16384)       # flash kept free for the session log and configuration
CA_FILE = "trust/fw_ca.der"   # DER certificate of the CA that signs the firmware server's
_FW_FIELDS = ("location", "retrieveDateTime", "installDateTime", "signingCertificate", "signature")


E_SLOW = "slow"        # FetchError code: below the minimum rate in a window


class UpdateError(ValueError):
    """A request the job refuses (malformed, or busy). Nothing was changed."""


# ---- small helpers --------------------------------------------------------

def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _hex(b):
    return "".join("%02x" % x for x in b)


def load_keys(root="/"):
    """Trusted keys from /trust/keys.bin (outside the slots): 1..16 raw 32-byte
    Ed25519 keys and 65-byte P-256 points, concatenated (image.split_keys)."""
    with open(_p(root, KEYS_FILE), "rb") as f:
        data = f.read(65 * 16 + 1)
    try:
        return image.split_keys(data, 16)
    except image.ImageError as e:
        raise ValueError("trust/keys.bin must hold 1..16 raw keys (32-byte Ed25519, 65-byte "
                         "P-256): %s" % e)


def version_tuple(v):
    """(major, minor, revision, build) from a tuple/list or 'M.m.r[+b]'."""
    if isinstance(v, (tuple, list)):
        t = [int(x) for x in v][:4]
    else:
        s, _, b = str(v).partition("+")
        t = [int(x) for x in s.split(".")][:3]
        while len(t) < 3:
            t.append(0)
        t.append(int(b) if b else 0)
    while len(t) < 4:
        t.append(0)
    return tuple(t)


def version_str(v):
    return "%d.%d.%d+%d" % v if v[3] else "%d.%d.%d" % v[:3]


def parse_datetime(s):
    """ISO 8601 / RFC 3339 date-time -> UNIX seconds; ValueError when malformed."""
    if not isinstance(s, str) or len(s) < 19 or s[4] != "-" or s[7] != "-" \
            or s[10] not in "Tt " or s[13] != ":" or s[16] != ":":
        raise ValueError("bad date-time %r" % (s,))
    y, mo, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
    h, mi, se = int(s[11:13]), int(s[14:16]), int(s[17:19])
    rest = s[19:]
    if rest.startswith("."):
        i = 1
        while i < len(rest) and "0" <= rest[i] <= "9":
            i += 1
        rest = rest[i:]
    off = 0
    if rest in ("Z", "z"):
        pass
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        off = (int(rest[1:3]) * 60 + int(rest[4:6])) * 60
        if rest[0] == "+":
            off = -off
    else:
        raise ValueError("date-time needs Z or an offset: %r" % (s,))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and se < 61):
        raise ValueError("bad date-time %r" % (s,))
    # days from civil (proleptic Gregorian)
    yy = y - (mo <= 2)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + se + off


def parse_request(req):
    """Validate an OCPP 1.6 SignedUpdateFirmware request (flat, or with the
    `firmware` object of the spec). Returns the job dict; UpdateError."""
    if not isinstance(req, dict):
        raise UpdateError("request must be an object")
    for k in req:
        if k not in _FIELDS:
            raise UpdateError("unknown field %r" % (k,))
    fw = req.get("firmware", {})
    if not isinstance(fw, dict):
        raise UpdateError("firmware must be an object")
    for k in fw:
        if k not in _FW_FIELDS:
            raise UpdateError("unknown firmware field %r" % (k,))
    get = lambda k: fw[k] if k in fw else req.get(k)
    rid = req.get("requestId")
    if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 2 ** 31:
        raise UpdateError("requestId must be a non-negative integer")
    loc = get("location")
    if not isinstance(loc, str) or len(loc) > _MAX_URL:
        raise UpdateError("location must be an http(s) URL string")
    try:
        fetch.parse_url(loc)
    except fetch.FetchError as e:
        raise UpdateError("location: %s" % e)
    out = {"id": rid, "loc": loc, "ret": None, "inst": None}
    for k, key in (("retrieveDateTime", "ret"), ("installDateTime", "inst")):
        v = get(k)
        if v is not None:
            try:
                out[key] = parse_datetime(v)
            except (ValueError, TypeError, IndexError):
                raise UpdateError("%s must be an ISO 8601 date-time" % k)
    for k, key, hi, dflt in (("retries", "retries", _MAX_RETRIES, _DEFAULT_RETRIES),
                             ("retryInterval", "interval", _MAX_INTERVAL, _DEFAULT_INTERVAL)):
        v = req.get(k, dflt)
        if v is None:
            v = dflt
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
            raise UpdateError("%s must be an integer 0..%d" % (k, hi))
        out[key] = v
    for k in ("signingCertificate", "signature"):
        v = get(k)
        if v is not None and not isinstance(v, str):
            raise UpdateError("%s must be a string" % k)
    key = req.get("signingKey")
    if key is not None:
        # the whitepaper's file signature (fwsig.py): the key of the signing
        # certificate the OCPP link checked against the Manufacturer roots;
        # both go into the job file, so a resumed download still checks
        sig = get("signature")
        if not isinstance(key, str) or not 0 < len(key) <= 140 or ":" not in key:
            raise UpdateError("signingKey must be 'type:hex'")
        if not isinstance(sig, str) or not 0 < len(sig) <= 800:
            raise UpdateError("a signingKey needs the signature (base64)")
        out["fkey"] = key
        out["fsig"] = sig
    force = req.get("force", False)
    if force is not True and force is not False:
        raise UpdateError("force must be true or false")
    if force:
        out["force"] = True
    return out


# ---- the job ----------------------------------------------------------------

class UpdateJob:
    def __init__(self, root="/", keys=None, board=None, running_version=(0, 0, 0, 0), clock=None,
                 fetcher_factory=None, on_status=None, trials=3, max_size=2097152,
                 timeout_ms=30000, persist_every=16384, bufsize=1024, reserve=_RESERVE,
                 deadline_s=3600, min_rate=64, rate_window_ms=60000, before_install=None,
                 links_busy=None, feed=None):
        self.root = boot._root(root)
        # links_busy() -> True while a backend link still has messages in flight:
        # the unpack waits for them (at most _HOLD_MS) after INSTALLING is reported,
        # so that before_install's suspend does not cut a CALL (it would be sent
        # again after the reconnect: a status reported twice)
        self.links_busy = links_busy
        self._hold = None
        # called right before the unpack (the charger is idle): the agent stops
        # its MQTT/OCPP traffic and releases their buffers (contiguous heap for
        # the deflate window); they reconnect after
        self.before_install = before_install
        # called on progress during the install step (one long step: unpack,
        # slot check, ROM image): the agent feeds its watchdog
        self.feed = feed
        self.keys = keys                  # None: read trust/keys.bin for each job
        self.board = board
        self.running = version_tuple(running_version)
        self.clock = clock                # wall clock: UNIX seconds, or None if unknown
        self.on_status = on_status
        self.trials = trials
        self.max_size = max_size
        self.reserve = reserve            # bytes of flash an update leaves free
        # slow retrieval (TUF): the whole download within deadline_s of its start,
        # and at least min_rate bytes/s in every rate_window_ms of a connection
        self.deadline_ms = deadline_s * 1000
        self.min_rate = min_rate
        self.rate_window_ms = rate_window_ms
        self.timeout_ms = timeout_ms
        self.persist_every = persist_every
        self._buf = bytearray(bufsize)
        self._mv = memoryview(self._buf)
        self._factory = fetcher_factory or self._default_fetcher
        self._now = 0
        self.reboot_requested = False
        self.connections = 0              # HTTP connections opened (diagnostics)
        self._reset()

    def _default_fetcher(self, url, clock):
        return fetch.Fetcher(url, clock=clock, buf=self._buf, timeout_ms=self.timeout_ms,
                             connect_timeout_ms=self.timeout_ms, cadata=self._ca(url))

    def _ca(self, url):
        # https: the firmware-server CA of the trust store (outside the slots);
        # none -> the fetcher refuses (fail closed)
        if not url.startswith("https:"):
            return None
        path = _p(self.root, CA_FILE)
        try:
            n = os.stat(path)[6]
            if not 0 < n <= 4096:
                return None
            with open(path, "rb") as f:
                return f.read(n) or None    # its own size: no 4 KB block on a fragmented heap
        except OSError:
            return None

    def _reset(self):
        self._st = _NONE
        self._hold = None
        self.job = None
        self._f = None
        self._file = None
        self._v = None
        self._done = 0
        self._fails = 0
        self._status = IDLE
        self._pct = None
        self._since_persist = 0
        self._dl_t0 = None
        self._win_t = self._win_n = 0
        self._fh = None       # SHA-256 of the file (whitepaper signature), while it is fed

    # -- reporting --------------------------------------------------------
    def status(self):
        return self._status

    def _report(self, status, reason=None, progress=None):
        self._status = status
        rid = self.job["id"] if self.job else None
        if self.on_status is not None:
            try:
                self.on_status(status, rid, progress, reason)
            except Exception as e:  # a broken reporter must not break the update
                import sys
                sys.print_exception(e)

    @property
    def active(self):
        return self._st != _NONE

    # -- control ----------------------------------------------------------
    def start(self, request):
        """Accept a SignedUpdateFirmware request. Returns 'Accepted', or
        'AcceptedCanceled' when it replaced a job that had not started
        installing. Raises UpdateError (nothing changed) when malformed, or
        when an installed update still waits for its reboot/confirmation."""
        job = parse_request(request)
        old = load_job(self.root)
        cur = self.job if self.job is not None else old
        if (cur is not None and cur.get("id") == job["id"] and cur.get("loc") == job["loc"]
                and not job.get("force")):
            # a re-send of the job that runs (a backend that lost our reply):
            # idempotent, the download/install goes on where it is
            return "Accepted"
        if self._st == _REBOOT or (old is not None and old.get("state") in ("installing", "rebooting")):
            raise UpdateError("busy: an installed update awaits reboot/confirmation")
        rec = boot.read_record(self.root)
        if rec.pending is not None:
            # a trial is undecided (or an installed slot awaits its first boot):
            # an update now would overwrite or be confirmed in place of what
            # runs; refused before anything of the old job is touched
            raise UpdateError("busy: slot %s is on trial; retry after it is confirmed or rolled back"
                              % rec.pending)
        result = "Accepted"
        if self._st != _NONE or old is not None:
            self._abandon()
            result = "AcceptedCanceled"
        job["slot"] = slots.inactive(self.root)
        job["state"] = "sched"
        job["done"] = 0
        job["etag"] = None
        self.job = job
        self._persist()
        self._st = _SCHED
        self._sched_reported = False
        return result

    def cancel(self):
        """Drop the job (not once installing has begun); True if one was dropped."""
        if self._st in (_NONE, _REBOOT):
            return False
        self._abandon()
        return True

    def resume(self):
        """After a (re)boot: continue a persisted download / install. Jobs
        waiting for their trial boot's verdict are left to health.boot_report().
        Returns True when a job was resumed."""
        job = load_job(self.root)
        if job is None:
            clean_orphans(self.root)     # garbled job file: drop its staged image
            return False
        state = job.get("state")
        if state == "rebooting":
            return False
        slot = job.get("slot")
        rec = boot.read_record(self.root)
        if slot not in slots.SLOTS or slot == rec.active:
            clear_job(self.root)
            return False
        self.job = job
        if state == "sched":
            self._st = _SCHED
            self._sched_reported = False
            return True
        # download, verified or installing: re-check the staged bytes
        self._begin_rehash()
        return True

    def _abandon(self):
        self._close()
        if self.job is not None:
            _remove(self._staging())
        else:
            old = load_job(self.root)
            if old is not None and old.get("slot") in slots.SLOTS:
                _remove(slots.staging_path(old["slot"], self.root))
        clear_job(self.root)
        self._reset()

    # -- persistence ------------------------------------------------------
    def _staging(self):
        return slots.staging_path(self.job["slot"], self.root)

    def _persist(self, state=None):
        if state is not None:
            self.job["state"] = state
        elif self._st in _PSTATE:
            self.job["state"] = _PSTATE[self._st]
        self.job["done"] = self._done
        if self._f is not None and self._f.etag:
            self.job["etag"] = self._f.etag
        save_job(self.job, self.root)
        self._since_persist = 0

    def _close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def _new_verifier(self):
        keys = self.keys
        if keys is None:
            try:
                keys = load_keys(self.root)
            except (OSError, ValueError) as e:
                raise image.ImageError("trusted keys: %s" % e)
        # the file's own SHA-256, fed with the image (no second pass) when the
        # job carries the whitepaper signature
        j = self.job
        if j is not None and j.get("fkey"):
            import hashlib
            self._fh = hashlib.sha256()
        else:
            self._fh = None
        # board checked after the signature (-> InstallVerificationFailed)
        return image.Verifier(keys, None, self.max_size)

    # -- the step ---------------------------------------------------------
    def poll(self, now_ms, charging_idle=True, in_window=True):
        """One bounded step. Returns True once the caller must reboot."""
        self._now = now_ms
        st = self._st
        try:
            if st == _DL:
                self._step_download()
            elif st == _REHASH:
                self._step_rehash()
            elif st == _PAUSED:
                if self._due(self._next):
                    self._st = _DL
                    self._report(DOWNLOADING, None, self._pct)
            elif st == _SCHED:
                self._step_sched()
            elif st == _WAIT:
                self._step_wait(charging_idle, in_window)
        except image.ImageError as e:
            self._fail(INVALID_SIGNATURE, "image: %s" % e)
        except UpdateError as e:
            self._fail(DOWNLOAD_FAILED, str(e))
        except OSError as e:
            self._fail(DOWNLOAD_FAILED if self._st in (_DL, _REHASH) else INSTALLATION_FAILED,
                       "storage: %s" % e)
        except Exception as e:  # never let the update break the agent loop
            import sys
            sys.print_exception(e)
            self._fail(DOWNLOAD_FAILED if self._st in (_DL, _REHASH, _SCHED, _PAUSED)
                       else INSTALLATION_FAILED, "internal: %r" % (e,))
        return self.reboot_requested

    def _due(self, t):
        import time
        return time.ticks_diff(self._now, t) >= 0

    def _wall(self):
        return self.clock() if self.clock is not None else None

    def _step_sched(self):
        ret = self.job.get("ret")
        now = self._wall()
        if ret is not None and now is not None and now < ret:
            if not self._sched_reported:
                self._sched_reported = True
                self._report(DOWNLOAD_SCHEDULED)
            return
        _remove(self._staging())
        self._done = 0
        self._v = self._new_verifier()
        self._file = open(self._staging(), "wb")
        self._st = _DL
        self._persist()
        self._report(DOWNLOADING, None, 0)

    def _begin_rehash(self):
        bundle.reserve()   # as in _step_download
        self._v = self._new_verifier()
        self._done = 0
        self._st = _REHASH
        size = _size(self._staging())
        self._rehash_left = size if size > 0 else 0
        self._file = open(self._staging(), "rb") if size > 0 else None
        self._report(DOWNLOADING, None, None)

    def _step_rehash(self):
        if self._rehash_left > 0:
            mv = self._mv
            n = self._file.readinto(mv if self._rehash_left >= len(mv) else mv[:self._rehash_left])
            if not n:
                self._rehash_left = 0
            else:
                try:
                    self._feed(mv[:n], write=False)
                except image.ImageError:
                    # the staged bytes do not form a valid prefix: start over
                    self._rehash_left = 0
                    self._restart_file()
                    return
                self._rehash_left -= n
            if self._rehash_left > 0 and not self._v.done:
                return
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._v.done:
            self._downloaded()
            return
        self._file = open(self._staging(), "ab")
        self._st = _DL
        self._persist()

    def _restart_file(self):
        self._close()
        self._v = self._new_verifier()
        self._done = 0
        self.job["etag"] = None
        self._file = open(self._staging(), "wb")
        self._st = _DL
        self._persist()

    def _feed(self, data, write=True):
        """Give the verifier as many bytes as the image can still take; write
        them to the staging file. Returns how many were taken."""
        v = self._v
        n = len(data)
        i = 0
        while i < n and not v.done:
            cap = v.expected_size() - v.received
            if cap <= 0:
                break
            k = n - i if n - i < cap else cap
            part = data[i:i + k] if (i or k != n) else data
            v.feed(part)
            if self._fh is not None:
                self._fh.update(part)
            if write:
                self._file.write(part)
            i += k
        self._done += i
        return i

    def _limit(self):
        v = self._v
        return v.expected_size() if v.header() is not None else self.max_size

    def _slow(self, r, rate=True):
        """Slow-retrieval guard, every download poll: FetchError 'slow' when a
        window passed with fewer than min_rate bytes/s; the deadline fails the job."""
        import time
        now = self._now
        if self._dl_t0 is None:
            self._dl_t0 = now
        elif time.ticks_diff(now, self._dl_t0) > self.deadline_ms:
            raise UpdateError("download: deadline %d s passed at %d bytes"
                              % (self.deadline_ms // 1000, self._done))
        if not rate:
            return
        if r > 0:
            self._win_n += r
        el = time.ticks_diff(now, self._win_t)
        if el >= self.rate_window_ms:
            if self._win_n * 1000 < self.min_rate * el:
                raise fetch.FetchError(E_SLOW, "%d bytes in %d ms (minimum %d B/s)"
                                       % (self._win_n, el, self.min_rate))
            self._win_t, self._win_n = now, 0

    def _step_download(self):
        f = self._f
        if f is None:
            self._slow(0, False)
            f = self._factory(self.job["loc"], self._ticks)
            self._f = f
            self._win_t, self._win_n = self._now, 0
            self._conn_start = self._done
            self.connections += 1
            try:
                f.start(self._done, self._limit(), validator=self.job.get("etag"))
            except fetch.FetchError as e:
                return self._attempt_failed(e)
            return
        try:
            r = f.poll()
            self._slow(r)
            if r > 0:
                if not bundle.held():
                    # the install's deflate window, held from early in the
                    # download (after the connection's TLS buffers), before
                    # download and verification fragment the heap
                    bundle.reserve()
                had_header = self._v.header() is not None
                self._feed(f.chunk)
                self._since_persist += r
                if self._v.done:
                    return self._downloaded()
                if not had_header and self._v.header() is not None:
                    f.set_limit(self._v.expected_size())
                    self._check_space(self._v.expected_size())
                if self._since_persist >= self.persist_every or \
                        (f.etag is not None and f.etag != self.job.get("etag")):
                    # the validator goes to flash with the first bytes it covers,
                    # so a resume always carries If-Range
                    self._file.flush()
                    self._persist()
                self._progress()
            elif r == fetch.DONE:
                # the response ended before the image did: resume from here
                raise fetch.FetchError(fetch.E_CLOSED, "response ended at %d" % self._done)
            elif r == fetch.RESTART:
                self._f = None
                self._restart_file()
                self._f = f
                self._conn_start = 0
        except fetch.FetchError as e:
            self._attempt_failed(e)

    def _check_space(self, size):
        """The image's declared size must fit in free flash minus the reserve
        (what is staged already counts as used)."""
        free = slots.free_bytes(self.root)
        if free is not None and size - self._done > free - self.reserve:
            raise UpdateError("no space: image %d bytes, %d free, %d reserved"
                              % (size, free, self.reserve))

    def _ticks(self):
        return self._now

    def _progress(self):
        v = self._v
        if v.header() is None:
            return
        pct = self._done * 100 // v.expected_size()
        if self._pct is None or pct >= self._pct + 10:
            self._pct = pct
            self._report(DOWNLOADING, None, pct)

    def _attempt_failed(self, e):
        progressed = self._done > self._conn_start
        if self._f is not None:
            self._f.close()
            self._file.flush()
            self._persist()          # with the fetcher's validator
            self._f = None
        else:
            self._file.flush()
            self._persist()
        if getattr(e, "code", None) == fetch.E_CHANGED:
            # a 206 for another version of the file: what is staged is void
            self._restart_file()
            return
        if progressed and e.code != E_SLOW:
            self._fails = 0      # made progress: resume at once with Range
            return
        self._fails += 1
        if self._fails > self.job["retries"]:
            self._fail(DOWNLOAD_FAILED, "download: %s" % e)
            return
        import time
        self._next = time.ticks_add(self._now, self.job["interval"] * 1000)
        self._st = _PAUSED
        self._report(DOWNLOAD_PAUSED, "retry %d/%d: %s" % (self._fails, self.job["retries"], e), self._pct)

    def _downloaded(self):
        fk = self.job.get("fkey")
        if fk is not None:
            # SignedUpdateFirmware: the whitepaper signature over the file first,
            # then the image's own (MCUboot) signature; both must pass
            self._report(DOWNLOADED, None, 100)
            if not self._file_sig(fk):
                self._fail(INVALID_SIGNATURE, "file signature: does not verify with the "
                           "signing certificate's key")
                return
        info = self._v.finish()
        self._close()
        self._info = info
        self._persist("verified")
        if fk is None:
            self._report(DOWNLOADED, None, 100)
        self._report(SIGNATURE_VERIFIED)
        why = self._check(info)
        if why is not None:
            self._fail(INSTALL_VERIFICATION_FAILED, why)
            return
        v = version_str(info.version)
        self._v = None
        gc.collect()
        earlier = load_failed(self.root).get(v)
        if earlier is not None and not self.job.get("force"):
            # pushed again after it failed its trial: say so, unless forced
            self._fail(INSTALLATION_FAILED, "failed_before: %s: %s (send force to retry)" % (v, earlier))
            return
        self._st = _WAIT
        self._wait_reported = False

    def _file_sig(self, key):
        if self._fh is None:
            return False          # no hash of the file: fail closed
        digest = self._fh.digest()
        self._fh = None
        import sys
        mods = [m for m in ("fwsig", "ecdsa_p256") if "firmware.ota." + m not in sys.modules]
        from firmware.ota import fwsig
        try:
            try:
                return fwsig.verify(key, digest, self.job.get("fsig"))
            except MemoryError:
                # out of heap is not a bad signature: collect and try once more; a
                # second MemoryError reaches poll() (DownloadFailed, "internal")
                gc.collect()
                return fwsig.verify(key, digest, self.job.get("fsig"))
        finally:
            # loaded for this check only (ed25519 and wnaf: ondemand.release)
            fwsig = None
            pkg = sys.modules.get("firmware.ota")
            for m in mods:
                sys.modules.pop("firmware.ota." + m, None)
                if pkg is not None and m in pkg.__dict__:
                    delattr(pkg, m)

    def _check(self, info):
        if self.board is not None and info.board != self.board:
            return "wrong_board: image for %r, this is %r" % (info.board, self.board)
        if info.version <= self.running:
            return "not_newer: %s <= running %s" % (version_str(info.version), version_str(self.running))
        rec = boot.read_record(self.root)
        top = rec.top
        if top is not None and info.version <= version_tuple(top):
            return "not_newer: %s <= confirmed %s" % (version_str(info.version), top)
        floor = rec.floor
        sec = info.security_counter if info.security_counter is not None else 0
        if sec < floor:
            return "sec_counter: %d below floor %d" % (sec, floor)
        return None

    def _step_wait(self, idle, in_window):
        inst = self.job.get("inst")
        now = self._wall()
        if not (idle and in_window) or (inst is not None and now is not None and now < inst):
            if self._hold is not None:
                self._hold = None               # a session began during the hold
                self._wait_reported = False
            if not self._wait_reported:
                self._wait_reported = True
                self._report(INSTALL_SCHEDULED)
            return
        if self.links_busy is not None:
            import time
            if self._hold is None:
                self._hold = self._now
                self._report(INSTALLING)
                return
            try:
                busy = self.links_busy()
            except Exception:  # noqa - a link that cannot say does not hold the install
                busy = False
            if busy and time.ticks_diff(self._now, self._hold) < _HOLD_MS:
                return
        self._install()

    def _install(self):
        info = self._info
        slot = self.job["slot"]
        # the download is over: give its objects back and defragment before unpacking
        if self._f is not None:
            self._f.close()
        self._f = self._v = None
        gc.collect()
        self._persist("installing")
        if self._hold is None:
            self._report(INSTALLING)
        self._hold = None
        if self.before_install is not None:
            try:
                self.before_install()
            except Exception as e:  # noqa - the install goes on with the links as they are
                print("updater: before_install: %r" % (e,))
            gc.collect()
        bundle.on_chunk(self.feed)
        try:
            try:
                m = slots.install(slot, self._staging(), info.header_size, info.payload_size,
                                  self.root, self.board, version_str(info.version), self.reserve,
                                  buf=self._buf)
                bundle.reserve(0)
            except Exception as e:  # BundleError, SlotError, OSError: the slot is left unbootable
                self._fail(INSTALLATION_FAILED, "install: %s" % e)
                return
            if not slots.verify_slot(slot, self.root):
                self._fail(INSTALLATION_FAILED, "install: slot does not match its manifest")
                return
        finally:
            bundle.on_chunk(None)
        fd = self.feed
        if fd is not None:
            fd()
        # the signed header's version is what the slot runs (not the MANIFEST's)
        version = version_str(info.version)
        from firmware.ota import evidence   # after the unpack (heap: the deflate window is gone)
        evidence.write_evidence(slot, version, info.security_counter, _hex(info.hash), self.root)
        self._rom(slot)
        if fd is not None:
            fd()
        boot.set_pending(slot, info.security_counter, self.trials, version, self.root)
        self._persist("rebooting")
        _remove(self._staging())
        self._st = _REBOOT
        self.reboot_requested = True
        self._report(INSTALL_REBOOTING)

    def _rom(self, slot):
        # the slot's ROMFS image into its own ROM partition, when the board
        # has one (docs/memory.md "ROMFS slots"); never fails the update: the
        # slot then boots from its files (or bootrom.py builds it at boot)
        import sys
        import vfs
        if getattr(sys.modules.get("_vboard"), "rom_ioctl", None) is None and not hasattr(vfs, "rom_ioctl"):
            return                          # no ROM partitions: nothing loaded
        try:
            from firmware.ota import romslot
            io = romslot.own_partition(slot)
            why = romslot.write(slot, self.root, io) if io is not None else None
        except Exception as e:  # noqa (MemoryError too)
            why = "%r" % (e,)
        pkg = sys.modules.get("firmware.ota")
        for m in ("romslot", "romfs"):
            sys.modules.pop("firmware.ota." + m, None)
            if pkg is not None and hasattr(pkg, m):
                delattr(pkg, m)
        if why:
            print("update: ROM image of slot %s not written: %s" % (slot, why))
        gc.collect()

    def _fail(self, status, reason):
        bundle.reserve(0)
        self._close()
        if self.job is not None:
            _remove(self._staging())
        clear_job(self.root)
        self._report(status, reason)
        self.job = None
        st = self._status
        self._reset()
        self._status = st
