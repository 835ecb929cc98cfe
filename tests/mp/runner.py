# MicroPython-side test runner, started by tests/conftest.py inside the unix port.
#   micropython runner.py MODULE_DIR MODULE list
#   micropython runner.py MODULE_DIR MODULE run [DATA_DIR] [-- NAME ...]
# Every line meant for pytest starts with "\x1eMPT " followed by JSON.
import sys
import gc
import io
import json

_MARK = "\x1eMPT "


def _emit(obj):
    sys.stdout.write(_MARK + json.dumps(obj) + "\n")


def _tests(mod):
    names = [n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n))]
    order = getattr(mod, "__order__", None)
    names.sort()
    return order if order else names


def main():
    mod_dir, mod_name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    rest = sys.argv[4:]
    data = None
    selected = None
    if rest and rest[0] != "--":
        data = rest.pop(0)
    if rest and rest[0] == "--":
        selected = rest[1:]
    sys.path.insert(0, mod_dir)
    import mptest

    mptest.DATA = data
    mod = __import__(mod_name)
    names = _tests(mod)
    if mode == "list":
        _emit({"list": names})
        return
    if selected:
        names = [n for n in names if n in selected]
    setup = getattr(mod, "setup", None)
    teardown = getattr(mod, "teardown", None)
    for name in names:
        gc.collect()
        _emit({"start": name})
        res = {"end": name, "outcome": "passed"}
        try:
            if setup:
                setup()
            getattr(mod, name)()
        except mptest.Skip as e:
            res["outcome"] = "skipped"
            res["msg"] = str(e.args[0]) if e.args else ""
        except BaseException as e:  # report everything, including MemoryError
            buf = io.StringIO()
            sys.print_exception(e, buf)
            res["outcome"] = "failed"
            res["exc"] = type(e).__name__
            res["msg"] = str(e)
            res["tb"] = buf.getvalue()
        finally:
            if teardown:
                try:
                    teardown()
                except BaseException as e:
                    buf = io.StringIO()
                    sys.print_exception(e, buf)
                    res["outcome"] = "failed"
                    res["tb"] = res.get("tb", "") + "teardown: " + buf.getvalue()
        _emit(res)
    _emit({"done": True})


main()
