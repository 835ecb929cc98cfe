# mptest: prep=tests.prep.images_p256:make heapsize=192K
# /trust/keys.bin with Ed25519 and P-256 keys read by updater.load_keys.
# Heap: importing firmware.ota.updater loads the whole OTA chain (as in
# test_updater.py); the key parsing itself is image.split_keys, tested at 96K
# in test_image_p256.py.
import os
import mptest
from firmware.ota import updater


def keys():
    with open(mptest.data_path("keys_p256.bin"), "rb") as f:
        b = f.read()
    return {"e1": b[0:65], "e2": b[65:130], "e3": b[130:195], "ed1": b[195:227]}


def test_load_keys_reads_the_mixed_trust_file():
    d = "/tmp/mptest-p256-keys"
    try:
        os.mkdir(d)
        os.mkdir(d + "/trust")
    except OSError:
        pass
    with open(mptest.data_path("trust_mixed.bin"), "rb") as f:
        data = f.read()
    path = d + "/trust/keys.bin"
    try:
        with open(path, "wb") as f:
            f.write(data)
        k = keys()
        mptest.eq(updater.load_keys(d), [k["ed1"], k["e1"], k["e2"]])
        with open(path, "wb") as f:
            f.write(data + b"\x00\x01")
        e = mptest.raises(ValueError, updater.load_keys, d)
        mptest.true("stray bytes" in str(e), str(e))
    finally:
        os.remove(path)
        os.rmdir(d + "/trust")
        os.rmdir(d)


def test_load_keys_ed25519_only_file_unchanged():
    d = "/tmp/mptest-ed-keys"
    try:
        os.mkdir(d)
        os.mkdir(d + "/trust")
    except OSError:
        pass
    ed = keys()["ed1"]
    path = d + "/trust/keys.bin"
    try:
        for n in (1, 2, 16):
            with open(path, "wb") as f:
                f.write(ed * n)
            mptest.eq(updater.load_keys(d), [ed] * n)
        for bad in (b"", ed * 17, ed + b"\x01"):
            with open(path, "wb") as f:
                f.write(bad)
            mptest.raises(ValueError, updater.load_keys, d)
    finally:
        os.remove(path)
        os.rmdir(d + "/trust")
        os.rmdir(d)
