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
"""
import importlib
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tools import mpunix  # noqa: E402

DEVICE_DIR = os.path.join(HERE, "device")
MP_DIR = os.path.join(HERE, "mp")
MARK = "\x1eMPT "


def _header(path):
    opts = {"heapsize": mpunix.DEFAULT_HEAP, "timeout": "600", "prep": None}
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


def _run(path, opts, args):
    mod = os.path.splitext(os.path.basename(path))[0]
    cmd = mpunix.argv(os.path.join(MP_DIR, "runner.py"), os.path.dirname(path), mod, *args,
                      heap=opts["heapsize"])
    mpy = _firmware_mpy()
    env = mpunix.env(*([MP_DIR, mpy] if mpy else [MP_DIR]))
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=float(opts["timeout"]), errors="replace")
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out, "timeout after %ss" % opts["timeout"]


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


def _prep_dir(spec, tmp_factory):
    if spec not in _prep_cache:
        modname, _, fn = spec.partition(":")
        d = str(tmp_factory.mktemp("prep-" + fn))
        getattr(importlib.import_module(modname), fn)(d)
        _prep_cache[spec] = d
    return _prep_cache[spec]


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
            yield DeviceItem.from_parent(self, name=name)

    def results(self):
        if self._results is None:
            names = [i.name for i in self.session.items if i.parent is self]
            args = ["run"]
            if self.opts["prep"]:
                args.append(_prep_dir(self.opts["prep"], self.session.config._tmp_path_factory))
            args += ["--"] + names
            rc, out, err = _run(str(self.path), self.opts, args)
            res, current, tail = _parse(out)
            self._results = (res, current, tail, rc, err)
        return self._results


class DeviceItem(pytest.Item):
    def runtest(self):
        res, current, tail, rc, err = self.parent.results()
        r = res.get(self.name)
        if r is None:
            if current == self.name:
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
            return "%s (inside MicroPython, heap %s)\n%s" % (self.name, self.parent.opts["heapsize"], excinfo.value)
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
