# A fake `esp32` module for the unix port: esp32.Partition over files, with
# NOR-flash semantics (programming only clears bits; erase sets a 4 KiB sector
# to 0xFF) and ESP-IDF's app rollback modeled in the otadata state:
#   set_boot() -> the image must start with 0xE9, state NEW
#   reboot()   -> NEW becomes PENDING_VERIFY and runs; a PENDING_VERIFY app
#                 that reboots without mark_app_valid_cancel_rollback() is
#                 ABORTED and the last valid app boots instead
# Every call is recorded in `calls` as (label, op, arg).
import os

TYPE_APP = 0
TYPE_DATA = 1
_BS = 4096

calls = []
_parts = {}       # label -> _Store
_state = {}       # label -> 'new'|'pending_verify'|'valid'|'aborted'|'undefined'
_boot = [None]    # label selected in otadata
_running = [None]
_order = []       # OTA app labels in order
_dir = [None]


class _Store:
    def __init__(self, path, blocks):
        self.path = path
        self.blocks = blocks
        with open(path, "wb") as f:
            blk = b"\xff" * _BS
            for _ in range(blocks):
                f.write(blk)


def reset(directory, blocks=16, running="ota_0"):
    """Two OTA app partitions of `blocks` 4 KiB sectors in files under
    `directory`; `running` boots, already valid."""
    calls.clear()
    _parts.clear()
    _state.clear()
    del _order[:]
    _dir[0] = directory
    for label in ("ota_0", "ota_1"):
        _parts[label] = _Store("%s/%s.bin" % (directory, label), blocks)
        _state[label] = "undefined"
        _order.append(label)
    # the running firmware holds a valid app image
    p = _parts[running]
    with open(p.path, "r+b") as f:
        f.write(b"\xe9running-" + running.encode())
    _state[running] = "valid"
    _boot[0] = running
    _running[0] = running


def cleanup():
    for p in _parts.values():
        try:
            os.remove(p.path)
        except OSError:
            pass


def reboot():
    """Model the ESP-IDF bootloader on a reset; returns the label that runs."""
    cur = _running[0]
    if _state.get(cur) == "pending_verify":
        _state[cur] = "aborted"
        calls.append((cur, "rollback", None))
    target = _boot[0]
    if _state.get(target) in ("aborted", "invalid", "undefined") or not _valid_image(target):
        # fall back to the last valid app
        target = None
        for label in _order:
            if _state[label] == "valid" and _valid_image(label):
                target = label
        if target is None:
            raise RuntimeError("bricked: no bootable app")
        _boot[0] = target
    if _state[target] == "new":
        _state[target] = "pending_verify"
    _running[0] = target
    calls.append((target, "boot", _state[target]))
    return target


def _valid_image(label):
    with open(_parts[label].path, "rb") as f:
        return f.read(1) == b"\xe9"


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = TYPE_APP
    TYPE_DATA = TYPE_DATA

    def __init__(self, id, block_size=_BS):
        if id == Partition.RUNNING:
            id = _running[0]
        elif id == Partition.BOOT:
            id = _boot[0]
        if id not in _parts:
            raise ValueError("partition not found")
        if block_size != _BS:
            raise ValueError("block_size")
        self.label = id
        self._s = _parts[id]

    def __eq__(self, other):
        return isinstance(other, Partition) and other.label == self.label

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=_BS):
        return [cls(l) for l in _order if label is None or l == label] if type == TYPE_APP else []

    def info(self):
        i = _order.index(self.label)
        return (TYPE_APP, 0x10 + i, 0x10000 + i * self._s.blocks * _BS,
                self._s.blocks * _BS, self.label, False)

    def ioctl(self, cmd, arg):
        calls.append((self.label, "ioctl", cmd))
        if cmd in (1, 2, 3):
            return 0
        if cmd == 4:
            return self._s.blocks
        if cmd == 5:
            return _BS
        if cmd == 6:
            self._check_write(arg, _BS)
            with open(self._s.path, "r+b") as f:
                f.seek(arg * _BS)
                f.write(b"\xff" * _BS)
            return 0
        return None

    def _check_write(self, block, n):
        if self.label == _running[0]:
            raise OSError(1)  # EPERM: writing the running app
        if block < 0 or block * _BS + n > self._s.blocks * _BS:
            raise OSError(22)

    def readblocks(self, block, buf, offset=0):
        calls.append((self.label, "readblocks", block))
        n = len(buf)
        if block < 0 or block * _BS + offset + n > self._s.blocks * _BS:
            raise OSError(22)
        with open(self._s.path, "rb") as f:
            f.seek(block * _BS + offset)
            f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        calls.append((self.label, "writeblocks", block))
        n = len(buf)
        if offset is None:
            # simple interface: erase the covered sectors first
            if n % _BS:
                raise OSError(22)
            self._check_write(block, n)
            with open(self._s.path, "r+b") as f:
                f.seek(block * _BS)
                f.write(b"\xff" * n)
            offset = 0
        self._check_write(block, offset + n)
        # NOR programming: bits can only go from 1 to 0
        old = bytearray(n)
        with open(self._s.path, "r+b") as f:
            f.seek(block * _BS + offset)
            f.readinto(old)
            for i in range(n):
                old[i] &= buf[i]
            f.seek(block * _BS + offset)
            f.write(old)

    def set_boot(self):
        calls.append((self.label, "set_boot", None))
        if not _valid_image(self.label):
            raise OSError(8)  # ENOEXEC: esp_ota_set_boot_partition validates the image
        _state[self.label] = "new"
        _boot[0] = self.label

    def get_next_update(self):
        calls.append((self.label, "get_next_update", None))
        i = _order.index(self.label)
        return Partition(_order[(i + 1) % len(_order)])

    @staticmethod
    def mark_app_valid_cancel_rollback():
        calls.append((_running[0], "mark_valid", None))
        _state[_running[0]] = "valid"


def state(label):
    return _state[label]
