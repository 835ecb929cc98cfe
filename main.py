# Bootstrap entry point (outside the slots, never replaced by OTA).
# boot.main() picks a slot (trial counting, rollback, manifest check), imports
# firmware.agent from it and runs it. When no slot can be started the board
# stays in a safe 'no firmware' state: nothing from firmware/ (and so no HAL)
# is loaded, so no relay can be closed; it prints and waits for service.
# A transient failure (MemoryError at import, nothing persisted) is retried.
import boot

while True:
    _info = boot.main()
    if _info.get("slot") is not None:
        break
    boot.idle(_info, period_s=5)
    if not _info.get("transient"):
        break
