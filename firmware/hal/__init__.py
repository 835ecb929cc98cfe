# Hardware abstraction layer. Backends are imported lazily: importing this
# package never touches `machine` (the unix port has none).
KINDS = ("esp32", "rp2", "sim")


def create(kind, **kw):
    """Board by name: 'esp32', 'rp2' or 'sim'; keywords go to its constructor."""
    if kind == "esp32":
        from firmware.hal.esp32 import Esp32Board
        return Esp32Board(**kw)
    if kind == "rp2":
        from firmware.hal.rp2 import Rp2Board
        return Rp2Board(**kw)
    if kind == "sim":
        from firmware.hal.sim import SimBoard
        return SimBoard(**kw)
    raise ValueError("unknown board %r (known: %s)" % (kind, ", ".join(KINDS)))
