# mptest: prep=tests.prep.updates:make timeout=600 heapsize=208K lanes=own-prep
# Heap: as test_updater.py (208K: the whole OTA chain, a LittleFS mount, the
# rig; the HTTPS case holds an mbedTLS context with a verified chain too).
# lanes=own-prep: the re-publish tests copy and remove files in the served www
# directory; with one prep for both lanes they raced (404 / ENOENT on mp32).
# The update rules of issue 13 / issue 10 §2-3 on a real LittleFS with a real
# HTTP server (tools/serve.py): no update during an undecided trial, confirm
# only what runs, the highest confirmed version, the resume validator,
# versions that disagree, versions that failed before, free space, garbled
# job files, slow loop periods in the trial health check.
import os
import time
import mptest
import boot
from firmware.hal import simflash
from firmware.ota import updater, health, slots

MP = "/upr"
R = MP + "/"
_dev = [None, None]


def _data(name):
    return mptest.data_path(name)


def _url(name, which="port", host="127.0.0.1"):
    with open(_data(which)) as f:
        port = int(f.read())
    return "%s://%s:%d/%s" % ("http" if which == "port" else "https", host, port, name)


def _copy(src, dst):
    simflash.copy_file(src, dst, bytearray(1024))


def setup():
    d = simflash.tmpdir("evupr")
    dev = simflash.FileBlockDevice(d + "/flash.bin", 4096, 96, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, MP)
    _dev[0], _dev[1] = dev, d
    os.mkdir(R + "trust")
    _copy(_data("keys.bin"), R + "trust/keys.bin")
    _copy(_data("ca.der"), R + "trust/fw_ca.der")
    boot.write_record(boot.Record("b"), R)
    ev = _data("v1.evb")
    slots.install("a", ev, 0, os.stat(ev)[6], R)
    boot.write_record(boot.Record("a"), R)


def teardown():
    simflash.umount(MP)
    _dev[0].close()
    simflash.rmtree(_dev[1])


class Log:
    def __init__(self):
        self.items = []

    def __call__(self, status, rid, progress, reason):
        self.items.append((status, rid, progress, reason))

    def statuses(self):
        return [s[0] for s in self.items]

    def last(self):
        return self.items[-1] if self.items else None


def _job(log=None, **kw):
    kw.setdefault("board", "evse-sim")
    kw.setdefault("running_version", "1.0.0")
    return updater.UpdateJob(R, on_status=log, **kw)


def _req(name, rid=7, **kw):
    r = {"requestId": rid, "location": _url(name), "retries": 2, "retryInterval": 5}
    r.update(kw)
    return r


class VClock:
    def __init__(self):
        self.t = 0


def drive(job, clk, steps=400000, stop=None):
    # poll until reboot requested, the job ends, or stop(job); virtual time
    for _ in range(steps):
        before = job._done
        if job.poll(clk.t, True, True):
            return True
        if not job.active or (stop is not None and stop(job)):
            return False
        if job._done == before:
            time.sleep_ms(1)
            clk.t += 100
        else:
            clk.t += 1
    raise AssertionError("job did not settle; status %s" % job.status())


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _untouched():
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.floor), ("a", None, 0))
    mptest.true(slots.verify_slot("a", R), "running slot a verifies")
    mptest.true(not _exists(slots.staging_path("b", R)), "staging cleaned")
    mptest.true(not _exists(R + updater.JOB_FILE), "job file cleaned")


def _reject(name, status, why, **kw):
    log = Log()
    job = _job(log, **kw)
    job.start(_req(name))
    mptest.eq(drive(job, VClock()), False)
    last = log.last()
    mptest.eq(last[0], status, last)
    mptest.true(why in (last[3] or ""), last)
    _untouched()
    return log


# ------------------------------------------- floor, trial, leftovers (issue 13.3/13.4, 10 §2)

def test_image_older_than_the_highest_confirmed_version_is_refused():
    # 3.0.0 was confirmed once; the board now runs 1.0.0 (a fallback): 2.0.0 is a downgrade
    rec = boot.read_record(R)
    rec.top = "3.0.0"
    boot.write_record(rec, R)
    log = _reject("v2.img", "InstallVerificationFailed", "confirmed 3.0.0")
    mptest.true("SignatureVerified" in log.statuses())


def test_update_refused_while_a_trial_is_undecided_and_only_the_running_slot_confirms():
    job = _job()
    job.start(_req("v2.img", rid=21))
    mptest.true(drive(job, VClock()))
    updater.clear_job(R)                       # the job file is gone (garbled, removed)
    slot, info = boot.select(R)
    mptest.eq((slot, info["trial"], info["version"]), ("b", True, "2.0.0"))
    before = boot.read_record(R).as_dict()
    e = mptest.raises(updater.UpdateError, _job(running_version="2.0.0").start, _req("v3_k2.img", rid=22))
    mptest.true("trial" in str(e), e)
    mptest.eq(boot.read_record(R).as_dict(), before)
    mptest.true(not _exists(R + updater.JOB_FILE) and not _exists(slots.staging_path("a", R)))
    # a verdict for a slot/version that is not the one on trial changes nothing
    mptest.eq(health.settle(True, None, R, "a", "1.0.0"), None)
    mptest.eq(health.settle(True, None, R, "b", "3.0.0"), None)
    mptest.eq(boot.read_record(R).as_dict(), before)
    health.settle(True, None, R, "b", "2.0.0")
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.floor, rec.top), ("b", None, 2, "2.0.0"))
    import bootev
    mptest.true(bootev.is_confirmed("b", R))
    mptest.eq(bootev.slot_version("b", R), ("2.0.0", True))
    boot._ev_done()


def test_garbled_job_file_staged_image_is_cleaned_at_boot():
    job = _job()
    job.start(_req("v2.img", rid=23))
    drive(job, VClock(), stop=lambda j: j._done > 3000)
    job._close()
    mptest.true(_exists(slots.staging_path("b", R)))
    with open(R + updater.JOB_FILE, "w") as f:
        f.write('{"id": 23, "loc": "htt')            # torn
    mptest.eq(_job().resume(), False)
    mptest.true(not _exists(slots.staging_path("b", R)), "staged image removed")
    mptest.true(not _exists(R + updater.JOB_FILE), "garbled job file removed")
    _untouched()


def test_a_resent_request_is_idempotent_and_a_refused_one_changes_nothing():
    # a backend that lost our reply sends the same job again: it goes on where it is
    job = _job()
    mptest.eq(job.start(_req("v2.img", rid=24)), "Accepted")
    drive(job, VClock(), stop=lambda j: j._done > 3000)
    done, st = job._done, job.status()
    mptest.eq(job.start(_req("v2.img", rid=24)), "Accepted")
    mptest.eq((job._done, job.status()), (done, st))
    # a trial is undecided: another job is refused and the running one is kept
    rec = boot.read_record(R)
    rec.pending = "b"
    boot.write_record(rec, R)
    mptest.raises(updater.UpdateError, job.start, _req("v3_k2.img", rid=25))
    mptest.eq((job._done, job.job["id"]), (done, 24))
    mptest.true(_exists(R + updater.JOB_FILE) and _exists(slots.staging_path("b", R)))
    rec.pending = None
    boot.write_record(rec, R)
    mptest.true(job.cancel())
    _untouched()


def test_slow_loop_periods_are_their_own_reason_and_need_several_in_a_window():
    # a busy host: slow periods spread out never fail the trial, and are not an exception
    h = health.Health({"stable_ms": 60000}, timeout_ms=90000, slow_count=3, slow_window_ms=10000)
    for t in range(0, 60000, 6000):              # one slow period every 6 s: 2 per window at most
        h.slow_period(204, t)
        mptest.eq(h.poll(t), None, t)
    mptest.eq(h.poll(60000), True)
    # a broken board: 3 slow periods within 10 s fail it, with their own reason
    h = health.Health({"stable_ms": 60000}, timeout_ms=90000, slow_count=3, slow_window_ms=10000)
    for t in (1000, 4000, 9000):
        mptest.eq(h.poll(t), None)
        h.slow_period(250, t)
    mptest.eq(h.poll(9001), False)
    mptest.true(h.reason.startswith("slow_loop:") and "uncaught" not in h.reason, h.reason)
    mptest.raises(ValueError, health.Health, {}, 1000, 0, 0)


def test_republished_behind_a_server_ignoring_if_range_restarts_cleanly():
    # the resume gets a 206 of the NEW file (If-Range ignored): refused as
    # 'changed', the staging file starts over from 0, the new release installs
    www = _data("www") + "/"
    _copy(www + "v2.img", www + "rep2.img")
    log = Log()
    job = _job(log)
    job.start(_req("rep2.img?drop=3000&ignore_ifrange=1", retries=5, retryInterval=1))
    clk = VClock()
    drive(job, clk, stop=lambda j: j._done >= 3000 and j._f is None)
    time.sleep_ms(5)
    _copy(www + "v201.img", www + "rep2.img")         # re-published: 2.0.1
    mptest.true(drive(job, clk), log.last())
    mptest.true("InvalidSignature" not in log.statuses(), log.statuses())
    mptest.eq(boot.read_record(R).pending_version, "2.0.1")
    os.remove(www + "rep2.img")


def test_release_republished_during_a_download_restarts_cleanly():
    # each connection drops after 3000 bytes; after the first one the file on
    # the server is replaced by another signed release: the resume carries
    # If-Range with the first validator, the server sends the new file whole,
    # the job starts over and installs it (not InvalidSignature)
    www = _data("www") + "/"
    _copy(www + "v2.img", www + "rep.img")
    log = Log()
    job = _job(log)
    job.start(_req("rep.img?drop=3000", retries=5, retryInterval=1))
    clk = VClock()
    drive(job, clk, stop=lambda j: j._done >= 3000 and j._f is None)
    mptest.true(updater.load_job(R)["etag"] is not None, "validator persisted with the first bytes")
    time.sleep_ms(5)
    _copy(www + "v3_k2.img", www + "rep.img")
    mptest.true(drive(job, clk), log.last())
    mptest.true("InvalidSignature" not in log.statuses(), log.statuses())
    mptest.eq(boot.read_record(R).pending_version, "3.0.0")
    os.remove(www + "rep.img")


def test_header_and_bundle_versions_that_disagree_are_refused():
    log = Log()
    job = _job(log)
    job.start(_req("v25_mismatch.img"))
    mptest.eq(drive(job, VClock()), False)
    mptest.eq(log.last()[0], "InstallationFailed")
    mptest.true("version mismatch" in log.last()[3], log.last())
    _untouched()


def test_a_version_that_failed_its_trial_is_refused_unless_forced():
    job = _job()
    job.start(_req("v2.img", rid=31))
    mptest.true(drive(job, VClock()))
    boot.select(R)
    health.settle(False, "cp_selftest_failed", R)
    boot.select(R)
    mptest.eq(health.boot_report(R)[0], "InstallationFailed")     # remembered here
    log = Log()
    job = _job(log)
    job.start(_req("v2.img", rid=32))
    mptest.eq(drive(job, VClock()), False)
    mptest.eq(log.last()[0], "InstallationFailed")
    mptest.true("failed_before: 2.0.0: cp_selftest_failed" in log.last()[3], log.last())
    mptest.eq(boot.read_record(R).pending, None)
    job = _job()
    mptest.raises(updater.UpdateError, job.start, _req("v2.img", rid=33, force=1))
    job.start(_req("v2.img", rid=33, force=True))
    mptest.true(drive(job, VClock()))
    mptest.eq(boot.read_record(R).pending_version, "2.0.0")


def test_image_larger_than_free_space_minus_reserve_is_refused_early():
    log = Log()
    job = _job(log, reserve=slots.free_bytes(R) - 4096)
    job.start(_req("v2.img"))
    mptest.eq(drive(job, VClock()), False)
    mptest.eq(log.last()[0], "DownloadFailed")
    mptest.true("no space" in log.last()[3], log.last())
    mptest.true(job._done < 4096, job._done)
    _untouched()


# ---- slow retrieval (issue 13.2) ----------------------------------------------------

def _drip(job, clk, ms_per_chunk, steps=200000):
    # every productive poll (<= 1 KiB) costs ms_per_chunk of virtual time: a dripping server
    for _ in range(steps):
        before = job._done
        if job.poll(clk.t, True, True):
            return True
        if not job.active:
            return False
        clk.t += ms_per_chunk if job._done != before else 100
        if job._done == before:
            time.sleep_ms(1)
    raise AssertionError("job did not settle; status %s" % job.status())


def test_dripping_server_pauses_then_fails_below_the_minimum_rate():
    log = Log()
    job = _job(log, min_rate=2048, rate_window_ms=10000)
    job.start(_req("v2.img", retries=2, retryInterval=5))
    clk = VClock()
    mptest.eq(_drip(job, clk, 4000), False)             # ~0.25 KiB/s < 2 KiB/s
    mptest.eq(log.statuses().count("DownloadPaused"), 2)
    paused = [i for i in log.items if i[0] == "DownloadPaused"]
    mptest.true("slow" in paused[0][3], paused[0])
    mptest.eq(log.last()[0], "DownloadFailed")
    mptest.true("slow" in log.last()[3], log.last())
    _untouched()


def test_overall_deadline_fails_the_download():
    log = Log()
    job = _job(log, deadline_s=20, min_rate=1, rate_window_ms=1000)
    job.start(_req("v2.img"))
    clk = VClock()
    mptest.eq(_drip(job, clk, 1500), False)             # 24 KiB at ~0.7 KiB/s: > 20 s
    mptest.eq(log.last()[0], "DownloadFailed")
    mptest.true("deadline 20 s" in log.last()[3], log.last())
    _untouched()


def test_a_fast_enough_download_is_not_affected():
    job = _job(min_rate=256, rate_window_ms=10000, deadline_s=600)
    job.start(_req("v2.img"))
    mptest.true(_drip(job, VClock(), 20))


# ---- HTTPS verification (issue 13.1) --------------------------------------------

def test_https_update_refuses_a_forged_server_with_a_clear_status():
    log = Log()
    job = _job(log)
    req = _req("v2.img", retries=1, retryInterval=1)
    req["location"] = _url("v2.img", "bad_tls_port", "localhost")   # self-signed, expired, other name
    job.start(req)
    mptest.eq(drive(job, VClock()), False)
    mptest.eq(log.last()[0], "DownloadFailed")
    mptest.true("tls: server certificate not trusted for localhost" in log.last()[3], log.last())
    _untouched()
    os.remove(R + "trust/fw_ca.der")                 # no CA: refused, never unverified
    log = Log()
    job = _job(log)
    req["location"] = _url("v2.img", "tls_port", "localhost")
    job.start(req)
    mptest.eq(drive(job, VClock()), False)
    mptest.true("no CA configured" in log.last()[3], log.last())
    _untouched()
    _copy(_data("ca.der"), R + "trust/fw_ca.der")
    job = _job()
    job.start(req)                                     # the real server: installs
    mptest.true(drive(job, VClock()))
