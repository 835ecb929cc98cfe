# OfflineFallbackTimeout (docs/ocpp.md, "Smart charging: offline"): when no
# OCPP message came from the CSMS for that many seconds (link down, CALLs
# unanswered), the offer is capped at the installer's fallback_current_a
# until the CSMS is heard again. The cap is the charging core's TTL
# (Evse.set_limit(source, amps, ttl_ms), as MQTT's set_limit uses it): limit
# source "ocpp_link" at 80 A, which never binds (the rating is lower or
# equal), renewed by every message from the CSMS; expired, the core counts it
# as fallback_current_a, and the offer is the minimum of all limits, so this
# can only lower it. link.py loads this module only while the key is set (or
# the board came up quiet) and calls alive() / watch().
import time

LIMIT = "ocpp_link"
_MAX_S = 86400       # the core's TTL must stay below half the ticks period


def _ttl(lk):
    t = lk.conf["OfflineFallbackTimeout"]
    return min(t, _MAX_S) * 1000 if t else 0


def alive(lk, now, boot):
    """A message from the CSMS (boot=True: the agent starts; a board that was
    quiet before the reboot starts capped). False: the key is 0, the source is
    removed and the module may go."""
    ms = _ttl(lk)
    lk.evse.set_limit(LIMIT, 80 if ms else None, (1 if boot and lk.quiet else ms) or None)
    if lk.quiet and not boot:
        lk.quiet = False
        lk._save_state()
    return bool(ms or lk.quiet)


def watch(lk, now):
    """Every poll: the quiet state (persisted for a reboot) and, on an idle
    link, a Heartbeat after half the timeout so a healthy CSMS is heard."""
    ms = _ttl(lk)
    if not ms:
        return
    d = time.ticks_diff(now, lk._heard)
    if d >= ms and not lk.quiet:
        lk.quiet = True          # the core's TTL expires now too
        lk._save_state()
        print("ocpp: nothing from the CSMS for %d s: the offer is capped at the fallback" % (ms // 1000))
    elif d >= ms // 2 and lk.connected and lk.registration == "Accepted" and lk._wait is None \
            and not lk._q:
        lk._enqueue("Heartbeat", {}, "q", None)
