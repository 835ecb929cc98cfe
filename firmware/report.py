# Payloads published under evse/<device_id>/ (field names: docs/mqtt.md).
# Each builder returns a dict; Link.publish() JSON-encodes it.

# OCPP 1.6 security extension FirmwareStatusNotification names (exact)
FIRMWARE_STATUSES = (
    "Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled", "DownloadPaused",
    "Idle", "InstallationFailed", "Installing", "Installed", "InstallRebooting",
    "InstallScheduled", "InstallVerificationFailed", "InvalidSignature", "SignatureVerified")


def version_str(v):
    """(major, minor, revision, build) -> "1.2.3+4" (as imgtool writes it)."""
    if v is None:
        return None
    if type(v) is str:
        return v
    s = "%d.%d.%d" % (v[0], v[1], v[2])
    return s + "+%d" % v[3] if len(v) > 3 and v[3] else s


def offline(version=None, slot=None):
    """The last will on `status` (and what a clean close publishes): offline,
    with the version and slot that ran, so that monitors keep them."""
    return {"online": False, "version": version_str(version), "slot": slot}


def status(version=None, slot=None, reason=None, trial=False, failed_version=None):
    """Retained on `status`. The last will replaces it with offline()."""
    return {"online": True, "version": version_str(version), "slot": slot, "trial": bool(trial),
            "reason": reason, "failed_version": version_str(failed_version)}


def state(cmd, session=None, paused=False):
    """Retained on `state`, published on every change. `cmd` is what
    Evse.step() returned, `session` Evse.session (dict or None)."""
    return {"state": cmd.state, "relay": cmd.relay, "duty": cmd.duty,
            "current_a": cmd.current_a, "source": cmd.source, "fault": cmd.fault,
            "paused": bool(paused), "session": session}


def telemetry(voltage_v=None, current_a=None, power_w=None, energy_wh=None,
              temperature_c=None, session_wh=None):
    """Periodic on `telemetry` (QoS 0, not retained); None = not measured.
    energy_wh is the meter total, session_wh the running session's energy
    (None: no session); `state` carries the session only as it was at its
    last change."""
    return {"voltage_v": voltage_v, "current_a": current_a, "power_w": power_w,
            "energy_wh": energy_wh, "temperature_c": temperature_c, "session_wh": session_wh}


def session(rec, device_id=None):
    """A finished session (Evse.pop_finished(): id, start_ms, stop_ms, reason,
    energy_wh, tag) -> the record kept in the SessionLog and published on
    `session` (QoS 1); the log adds "seq"."""
    out = dict(rec)
    out["device_id"] = device_id
    return out


def firmware(status_name, request_id=None, progress=None, reason=None):
    """Retained on `firmware`: the update job's status (OCPP names exactly)."""
    if status_name not in FIRMWARE_STATUSES:
        raise ValueError("not an OCPP firmware status: %r" % (status_name,))
    return {"status": status_name, "requestId": request_id, "progress": progress,
            "reason": reason}


def reply(rid, ok=True, error=None, **extra):
    """A command reply (Commands.handle builds these itself)."""
    r = {"id": rid, "ok": bool(ok)}
    if not ok:
        r["error"] = error or "refused"
    r.update(extra)
    return r


class StateWatch:
    """Tells when `state` must be re-published, without building a dict
    every control period: changed(cmd, session_active, paused) -> bool."""

    def __init__(self):
        self._v = [None] * 8

    def changed(self, cmd, session_active=False, paused=False):
        v = self._v
        if (v[0] == cmd.state and v[1] == cmd.relay and v[2] == cmd.duty
                and v[3] == cmd.current_a and v[4] == cmd.source and v[5] == cmd.fault
                and v[6] == session_active and v[7] == paused):
            return False
        v[0] = cmd.state
        v[1] = cmd.relay
        v[2] = cmd.duty
        v[3] = cmd.current_a
        v[4] = cmd.source
        v[5] = cmd.fault
        v[6] = session_active
        v[7] = paused
        return True
