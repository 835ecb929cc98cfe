# Device-side tests of the harness itself (runs inside the unix port).
import gc
import sys
import mptest


def test_runs_on_micropython():
    mptest.eq(sys.implementation.name, "micropython")


def test_heap_is_capped():
    gc.collect()
    total = gc.mem_free() + gc.mem_alloc()
    mptest.true(total <= 96 * 1024, "heap", total)


def test_machine_is_not_needed_by_firmware_import():
    # the firmware package itself must import without touching hardware
    import firmware
    mptest.true(firmware is not None)
