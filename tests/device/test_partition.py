# ESP32 whole-firmware slots (firmware/ota/partition.py) against fake_esp32.
import io
import os
import sys
import mptest
import fake_esp32
from firmware.ota import partition

# unique per run: the two test lanes (and other checkouts) run side by side
_DIR = "/tmp/evse-part-" + "".join("%02x" % b for b in os.urandom(6))


def _app(n, seed):
    b = bytearray(n)
    b[0] = 0xE9
    x = seed
    for i in range(1, n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        b[i] = (x >> 16) & 0xFF
    return b


def setup():
    try:
        os.mkdir(_DIR)
    except OSError:
        pass
    fake_esp32.reset(_DIR, blocks=8)
    sys.modules["esp32"] = fake_esp32


def teardown():
    fake_esp32.cleanup()
    sys.modules.pop("esp32", None)
    try:
        os.rmdir(_DIR)
    except OSError:
        pass


def _read(label, n, off=0):
    with open("%s/%s.bin" % (_DIR, label), "rb") as f:
        f.seek(off)
        return f.read(n)


def _same(label, img):
    b = bytearray(512)
    mv = memoryview(img)
    with open("%s/%s.bin" % (_DIR, label), "rb") as f:
        for i in range(0, len(img), 512):
            k = min(512, len(img) - i)
            f.readinto(b)
            if b[:k] != mv[i:i + k]:
                return False
    return True


def test_install_streams_blocks_verifies_and_sets_boot():
    ps = partition.PartitionSlots(fake_esp32)
    img = _app(3 * 4096 + 100, 7)
    ps.install(io.BytesIO(img), len(img))
    mptest.true(_same("ota_1", img), "partition content differs")
    # erase-before-write: whole 4 KiB blocks through writeblocks(blk, buf)
    writes = [c for c in fake_esp32.calls if c[1] == "writeblocks"]
    mptest.eq([c[2] for c in writes], [0, 1, 2, 3])
    mptest.true(all(c[0] == "ota_1" for c in writes), writes)
    # tail of the last block is padded with the erased value
    mptest.eq(_read("ota_1", 4 * 4096 - len(img), len(img)), b"\xff" * (4 * 4096 - len(img)))
    mptest.eq(fake_esp32.state("ota_1"), "new")
    # the running partition was only read (get_next_update), never written
    mptest.eq(_read("ota_0", 9), b"\xe9running-")


def test_confirmed_boot_stays_on_new_firmware():
    ps = partition.PartitionSlots(fake_esp32)
    img = _app(5000, 3)
    ps.install(io.BytesIO(img), len(img))
    mptest.eq(fake_esp32.reboot(), "ota_1")
    mptest.eq(fake_esp32.state("ota_1"), "pending_verify")
    partition.PartitionSlots(fake_esp32).confirm()
    mptest.eq(fake_esp32.state("ota_1"), "valid")
    mptest.eq(fake_esp32.reboot(), "ota_1")


def test_unconfirmed_boot_rolls_back_to_previous():
    ps = partition.PartitionSlots(fake_esp32)
    img = _app(5000, 4)
    ps.install(io.BytesIO(img), len(img))
    mptest.eq(fake_esp32.reboot(), "ota_1")
    # new firmware crashes / fails its health checks: reset without confirming
    mptest.eq(fake_esp32.reboot(), "ota_0")
    mptest.eq(fake_esp32.state("ota_1"), "aborted")
    mptest.eq(fake_esp32.reboot(), "ota_0")


def test_next_update_alternates_after_confirm():
    ps = partition.PartitionSlots(fake_esp32)
    ps.install(io.BytesIO(_app(4096, 1)), 4096)
    fake_esp32.reboot()
    ps.confirm()
    ps2 = partition.PartitionSlots(fake_esp32)
    t = ps2.begin(100)
    mptest.eq(ps2.label(t), "ota_0")


def test_too_big_image_rejected_before_any_write():
    ps = partition.PartitionSlots(fake_esp32)
    e = mptest.raises(partition.PartitionError, ps.begin, 8 * 4096 + 1)
    mptest.true("partition" in str(e), e)
    mptest.eq([c for c in fake_esp32.calls if c[1] in ("writeblocks", "set_boot")], [])


def test_not_an_app_image_rejected_and_boot_unchanged():
    ps = partition.PartitionSlots(fake_esp32)
    img = bytearray(_app(5000, 9))
    img[0] = 0
    mptest.raises(partition.PartitionError, ps.install, io.BytesIO(img), len(img))
    mptest.eq([c for c in fake_esp32.calls if c[1] in ("writeblocks", "set_boot")], [])
    mptest.eq(fake_esp32.reboot(), "ota_0")


def test_short_stream_never_sets_boot():
    ps = partition.PartitionSlots(fake_esp32)
    img = _app(6000, 5)
    mptest.raises(partition.PartitionError, ps.install, io.BytesIO(img[:5000]), len(img))
    mptest.eq([c for c in fake_esp32.calls if c[1] == "set_boot"], [])
    mptest.raises(partition.PartitionError, ps.set_boot)
    mptest.eq(fake_esp32.reboot(), "ota_0")


def test_more_than_declared_rejected():
    ps = partition.PartitionSlots(fake_esp32)
    ps.begin(100)
    mptest.raises(partition.PartitionError, ps.write, bytearray(101))


def test_readback_mismatch_detected():
    ps = partition.PartitionSlots(fake_esp32)
    img = _app(4096 * 2, 6)
    ps.begin(len(img))
    ps.write(img)
    ps.finish()
    # a bit flips in flash after programming (worn sector)
    with open(_DIR + "/ota_1.bin", "r+b") as f:
        f.seek(5000)
        f.write(b"\x00")
    e = mptest.raises(partition.PartitionError, ps.verify)
    mptest.true("mismatch" in str(e), e)


def test_flash_program_only_clears_bits_so_erase_is_needed():
    # the fake models NOR flash: programming without erase ANDs the data,
    # which is why PartitionSlots uses erase-before-write
    p = fake_esp32.Partition("ota_1")
    p.writeblocks(0, bytearray(b"\x0f" * 4096))
    p.writeblocks(0, bytearray(b"\xf0" * 16), 0)
    b = bytearray(16)
    p.readblocks(0, b)
    mptest.eq(bytes(b), b"\x00" * 16)
    p.writeblocks(0, bytearray(b"\xf0" * 4096))
    p.readblocks(0, b)
    mptest.eq(bytes(b), b"\xf0" * 16)
