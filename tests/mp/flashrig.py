# A scratch LittleFS for device tests (kept out of mptest, which every module loads).
from firmware.hal import simflash


def flash_up(mnt, prefix, block_size=512, blocks=256):
    """A fresh LittleFS on a flash file in a new temporary directory, mounted
    at mnt. Returns (root with a trailing slash, the directory) for flash_down."""
    tmp = simflash.tmpdir(prefix)
    dev = simflash.FileBlockDevice(tmp + "/flash.img", block_size, blocks, create=True)
    simflash.mkfs(dev)
    simflash.mount(dev, mnt)
    return mnt + "/", tmp


def flash_down(mnt, tmp):
    simflash.umount(mnt)
    simflash.rmtree(tmp)
