# Whole-firmware A/B slots on ESP32 app partitions (esp32.Partition).
#
# For boards that update the MicroPython firmware itself rather than the
# agent package on LittleFS. The image's payload (the ESP-IDF app binary) is
# streamed into the next OTA partition in 4 KiB blocks (erase-before-write:
# writeblocks without offset erases the sector first), the SHA-256 of what was
# written is checked by reading the partition back, then set_boot() selects it.
# ESP-IDF boots it once in PENDING_VERIFY; the new firmware confirms with
# mark_app_valid_cancel_rollback() after its health checks, otherwise the
# bootloader reverts to the previous partition on the next reset.
#
# The esp32 module is passed in (the unix port has none): never imported here.
from micropython import const
import hashlib

_BLOCK = const(4096)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_APP_MAGIC = const(0xE9)  # first byte of an ESP-IDF app image


class PartitionError(Exception):
    pass


class PartitionSlots:
    def __init__(self, esp32, buf=None):
        self.esp32 = esp32
        self.P = esp32.Partition
        self.buf = buf if buf is not None else bytearray(_BLOCK)
        if len(self.buf) != _BLOCK:
            raise PartitionError("buffer must be %d bytes" % _BLOCK)
        self.target = None
        self.size = 0
        self.written = 0
        self.digest = None

    def running(self):
        return self.P(self.P.RUNNING)

    def label(self, part):
        return part.info()[4]

    def capacity(self, part=None):
        part = part or self.running().get_next_update()
        return part.ioctl(_IOCTL_BLOCK_COUNT, 0) * part.ioctl(_IOCTL_BLOCK_SIZE, 0)

    # -- write -----------------------------------------------------------
    def begin(self, size):
        """Prepare the next OTA partition for an image payload of `size` bytes.

        Nothing is erased or written yet; PartitionError when it cannot fit."""
        if not isinstance(size, int) or size <= 0:
            raise PartitionError("bad size")
        try:
            target = self.running().get_next_update()
        except OSError:
            raise PartitionError("no OTA partition (firmware built without OTA?)")
        if target.ioctl(_IOCTL_BLOCK_SIZE, 0) != _BLOCK:
            raise PartitionError("partition block size is not 4096")
        cap = self.capacity(target)
        if size > cap:
            raise PartitionError("image %d > partition %d" % (size, cap))
        self.target = target
        self.size = size
        self.written = 0
        self._fill = 0
        self._blk = 0
        self._hash = hashlib.sha256()
        self.digest = None
        return target

    def write(self, data):
        """Append bytes of the payload (any length); full blocks go to flash."""
        if self.target is None or self.digest is not None:
            raise PartitionError("not writing")
        n = len(data)
        if self.written + n > self.size:
            raise PartitionError("more than the declared %d bytes" % self.size)
        mv = memoryview(data)
        buf = self.buf
        i = 0
        while i < n:
            k = _BLOCK - self._fill
            if k > n - i:
                k = n - i
            buf[self._fill:self._fill + k] = mv[i:i + k]
            self._fill += k
            i += k
            if self._fill == _BLOCK:
                self._flush()
        self.written += n

    def _flush(self):
        if self._blk == 0 and self.buf[0] != _APP_MAGIC:
            raise PartitionError("payload is not an ESP32 app image")
        self._hash.update(self.buf)
        # writeblocks without offset = erase the sector, then program it
        self.target.writeblocks(self._blk, self.buf)
        self._blk += 1
        self._fill = 0

    def finish(self):
        """Write the last partial block (padded with 0xFF, the erased value)."""
        if self.target is None or self.written != self.size:
            raise PartitionError("short image: %d of %d" % (self.written, self.size))
        if self._fill:
            for i in range(self._fill, _BLOCK):
                self.buf[i] = 0xFF
            self._flush()
        self.digest = self._hash.digest()
        self._hash = None
        return self.digest

    def verify(self, digest=None):
        """Read the partition back and compare its SHA-256 with what was
        written (or `digest`, the SHA-256 over the padded blocks)."""
        want = digest or self.digest
        if self.target is None or want is None:
            raise PartitionError("nothing written")
        h = hashlib.sha256()
        for blk in range((self.size + _BLOCK - 1) // _BLOCK):
            self.target.readblocks(blk, self.buf)
            h.update(self.buf)
        if h.digest() != want:
            raise PartitionError("read-back hash mismatch")
        return True

    def install(self, stream, size, chunk=None):
        """Stream `size` payload bytes from `stream` into the next partition,
        verify by read-back and select it for the next boot."""
        self.begin(size)
        mv = memoryview(chunk if chunk is not None else bytearray(512))
        left = size
        while left:
            n = stream.readinto(mv if left >= len(mv) else mv[:left])
            if not n:
                raise PartitionError("stream ended at %d of %d" % (size - left, size))
            self.write(mv[:n])
            left -= n
        self.finish()
        self.verify()
        self.set_boot()

    # -- switch ----------------------------------------------------------
    def set_boot(self):
        if self.digest is None:
            raise PartitionError("verify the image before set_boot")
        try:
            self.target.set_boot()
        except OSError as e:
            raise PartitionError("set_boot refused: %s" % e)

    def confirm(self):
        """Called by the new firmware after its health checks pass."""
        self.P.mark_app_valid_cancel_rollback()
