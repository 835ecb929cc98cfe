# Small assertion helpers for device-side tests (run inside the unix port).
# Plain `assert` works too; these put the values into the failure message.

DATA = None  # directory of files prepared by the host side, or None


class Skip(Exception):
    pass


def skip(msg=""):
    raise Skip(msg)


def eq(got, want, *ctx):
    if got != want:
        raise AssertionError("got %r, want %r %s" % (got, want, " ".join(str(c) for c in ctx)))


def true(cond, *ctx):
    if not cond:
        raise AssertionError("expected true: " + " ".join(str(c) for c in ctx))


def near(got, want, tol, *ctx):
    if abs(got - want) > tol:
        raise AssertionError("got %r, want %r +- %r %s" % (got, want, tol, " ".join(str(c) for c in ctx)))


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %s" % (exc.__name__, getattr(fn, "__name__", fn)))


def data_path(name):
    if DATA is None:
        skip("no host data for this module")
    return DATA + "/" + name

