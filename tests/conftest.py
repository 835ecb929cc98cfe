"""pytest harness for device-side tests.

Modules in tests/device/ are MicroPython: CPython never imports them. Each one
is run inside the unix port (heap capped, 96K unless its header says otherwise)
by tests/mp/runner.py, once per module, and every test function in it is
reported to pytest under its own name, with the assertion, the MicroPython
traceback and what the test printed.

A device module may start with a header line:
    # mptest: heapsize=128K timeout=600 prep=tests.prep.images:make
`prep` names a CPython function called with a directory; it writes files the
device tests read (signed images, ...) through mptest.data_path(name).
`lanes=own-prep` gives each lane its own prep (its own broker or server:
client ids, retained messages and sessions of one lane must not meet the
other's); `lanes=serial` runs the two lanes one after the other. The runner
sees its lane in $EVSE_LANE.

Lanes: every device module runs on two unix ports at the same heap cap, and
each test is reported once per lane, the lane in its id:
    test_evse_relay.py::test_x[mp64]   the pinned 64-bit port (or $MICROPYTHON)
    test_evse_relay.py::test_x[mp32]   a 32-bit build (small ints end at 2**30)
`-k mp32` / `-k "not mp32"` selects a lane. The 32-bit binary is $MP32, else
../shared/mp32/micropython beside the repo (or beside its worktree); where
none exists, the mp32 items are skipped saying how to get one. The module's
test list is read once (on the 64-bit lane), and the two lanes' runs of a
module go concurrently (two processes, output to temporary files).
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tools import mpunix  # noqa: E402

DEVICE_DIR = os.path.join(HERE, "device")
MP_DIR = os.path.join(HERE, "mp")
MARK = "\x1eMPT "
ROOT = os.path.dirname(HERE)
LANES = ("mp64", "mp32")
MP32_HOWTO = ("no 32-bit MicroPython found (tried %s): build one with ../shared/mp32/build.sh "
              "(MicroPython unix port, MICROPY_FORCE_32BIT=1) and run `MP32=path make test`")


mp32_candidates = mpunix.mp32_candidates
mp32_binary = mpunix.mp32_binary


def lane_binary(lane):
    return mp32_binary() if lane == "mp32" else mpunix.binary()


def _header(path):
    opts = {"heapsize": mpunix.DEFAULT_HEAP, "timeout": "600", "prep": None, "lanes": "concurrent"}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith("# mptest:"):
                for kv in line[len("# mptest:"):].split():
                    k, _, v = kv.partition("=")
                    opts[k] = v
    return opts


_MPY_DIR = []


def _firmware_mpy():
    """firmware/ compiled with mpy-cross once per session, as a release ships it:
    device tests import the bytecode (no compile-time heap peaks; line numbers
    and file names are kept for tracebacks). EVSE_TEST_SOURCE=1 runs the .py."""
    if os.environ.get("EVSE_TEST_SOURCE"):
        return None
    if not _MPY_DIR:
        import tempfile
        from tools import release
        d = tempfile.mkdtemp(prefix="evse-mpy-")
        release.compile_tree(os.path.join(os.path.dirname(HERE), "firmware"), d, use_mpy=True)
        _MPY_DIR.append(d)
    return _MPY_DIR[0]


def _start(path, opts, args, lane="mp64"):
    """Start one module run on a lane; output goes to temporary files so that
    two runs can go on side by side without blocking on a full pipe."""
    mod = os.path.splitext(os.path.basename(path))[0]
    cmd = mpunix.argv(os.path.join(MP_DIR, "runner.py"), os.path.dirname(path), mod, *args,
                      heap=opts["heapsize"])
    cmd[0] = lane_binary(lane)
    mpy = _firmware_mpy()
    env = mpunix.env(*([MP_DIR, mpy] if mpy else [MP_DIR]))
    env["EVSE_LANE"] = lane
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
    return p, out, err, time.monotonic() + float(opts["timeout"]), opts["timeout"]


def _finish(run):
    p, out, err, deadline, timeout = run
    try:
        rc = p.wait(timeout=max(0.1, deadline - time.monotonic()))
        note = ""
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc, note = None, "timeout after %ss" % timeout
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
        f.close()
    return rc, texts[0], texts[1] + note


def _run(path, opts, args, lane="mp64"):
    return _finish(_start(path, opts, args, lane))


def _parse(stdout):
    results, current, out = {}, None, []
    for line in stdout.split("\n"):
        if line.startswith(MARK):
            msg = json.loads(line[len(MARK):])
            if "start" in msg:
                current, out = msg["start"], []
            elif "end" in msg:
                msg["out"] = "\n".join(out)
                results[msg["end"]] = msg
                current = None
            elif "list" in msg:
                results["__list__"] = msg["list"]
        elif current is not None:
            out.append(line)
    return results, current, "\n".join(out)


_prep_cache = {}


def _prep_dir(spec, tmp_factory, lane=None):
    key = (spec, lane)
    if key not in _prep_cache:
        modname, _, fn = spec.partition(":")
        d = str(tmp_factory.mktemp("prep-" + fn + ("-" + lane if lane else "")))
        getattr(importlib.import_module(modname), fn)(d)
        _prep_cache[key] = d
    return _prep_cache[key]


class DeviceTestFailure(Exception):
    pass


class DeviceModule(pytest.File):
    def collect(self):
        self.opts = _header(str(self.path))
        self._results = None
        rc, out, err = _run(str(self.path), self.opts, ["list"])
        res, _, _ = _parse(out)
        if "__list__" not in res:
            raise self.CollectError(
                "MicroPython could not import %s (exit %s):\n%s%s" % (self.path.name, rc, out, err))
        for name in res["__list__"]:
            for lane in LANES:
                item = DeviceItem.from_parent(self, name="%s[%s]" % (name, lane))
                item.test, item.lane = name, lane
                yield item

    def results(self, lane):
        """Results of this module on `lane`; the first call starts the run of
        every lane that has selected items, concurrently."""
        if self._results is None:
            self._results = {}
            runs = {}
            for ln in LANES:
                names = [i.test for i in self.session.items if i.parent is self and i.lane == ln]
                if not names or lane_binary(ln) is None:
                    continue
                args = ["run"]
                if self.opts["prep"]:
                    args.append(_prep_dir(self.opts["prep"], self.session.config._tmp_path_factory,
                                          ln if self.opts["lanes"] == "own-prep" else None))
                args += ["--"] + names
                runs[ln] = args
            serial = self.opts["lanes"] == "serial"
            started = {} if serial else {
                ln: _start(str(self.path), self.opts, a, ln) for ln, a in runs.items()}
            for ln, a in runs.items():
                rc, out, err = _finish(started[ln] if ln in started else
                                       _start(str(self.path), self.opts, a, ln))
                res, current, tail = _parse(out)
                self._results[ln] = (res, current, tail, rc, err)
        return self._results[lane]


class DeviceItem(pytest.Item):
    test = lane = None

    def runtest(self):
        if self.lane == "mp32" and mp32_binary() is None:
            pytest.skip(MP32_HOWTO % ", ".join(mp32_candidates()))
        res, current, tail, rc, err = self.parent.results(self.lane)
        r = res.get(self.test)
        if r is None:
            if current == self.test:
                raise DeviceTestFailure(
                    "MicroPython died during this test (exit %s)\n--- output ---\n%s\n--- stderr ---\n%s"
                    % (rc, tail, err))
            raise DeviceTestFailure("not run: MicroPython exited early (exit %s)\n%s" % (rc, err[-2000:]))
        if r.get("out"):
            sys.stdout.write(r["out"] + "\n")
        if r["outcome"] == "skipped":
            pytest.skip(r.get("msg", ""))
        if r["outcome"] == "failed":
            text = "%s: %s\n\n--- MicroPython traceback ---\n%s" % (r.get("exc", "Error"), r.get("msg", ""), r.get("tb", ""))
            if r.get("out"):
                text += "\n--- test output ---\n" + r["out"]
            raise DeviceTestFailure(text)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, DeviceTestFailure):
            return "%s (inside MicroPython %s, %s, heap %s)\n%s" % (
                self.name, self.lane, lane_binary(self.lane), self.parent.opts["heapsize"], excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "%s::%s [micropython]" % (self.path.name, self.name)


def pytest_pycollect_makemodule(module_path, parent):
    if os.path.dirname(str(module_path)) == DEVICE_DIR:
        return DeviceModule.from_parent(parent, path=module_path)
    return None


def pytest_report_header(config):
    # which MQTT broker the MQTT tests run on (tests/prep/broker.py)
    from tests.prep import broker
    return broker.describe()


def pytest_terminal_summary(terminalreporter):
    # the same, at the end of the run (-q hides the header), when a broker ran
    from tests.prep import broker
    if broker.used():
        terminalreporter.write_line("%s; brokers started: %s" % (broker.describe(), ", ".join(broker.used())))
