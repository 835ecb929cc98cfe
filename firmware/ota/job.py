# The update job's persistent part: OCPP 1.6 status names, the job file on
# flash and its helpers. Kept apart from updater.py so that the trial boot
# (health.py) and the on-demand loader read a job without importing the whole
# OTA chain.
import os
import json
import boot

# OCPP 1.6 security FirmwareStatus values (exact names)
IDLE = "Idle"
DOWNLOAD_SCHEDULED = "DownloadScheduled"
DOWNLOADING = "Downloading"
DOWNLOAD_PAUSED = "DownloadPaused"
DOWNLOADED = "Downloaded"
DOWNLOAD_FAILED = "DownloadFailed"
SIGNATURE_VERIFIED = "SignatureVerified"
INVALID_SIGNATURE = "InvalidSignature"
INSTALL_SCHEDULED = "InstallScheduled"
INSTALLING = "Installing"
INSTALL_REBOOTING = "InstallRebooting"
INSTALLED = "Installed"
INSTALLATION_FAILED = "InstallationFailed"
INSTALL_VERIFICATION_FAILED = "InstallVerificationFailed"

JOB_FILE = "ota_job.json"
KEYS_FILE = "trust/keys.bin"


SLOTS = ("a", "b")


def staging_path(slot, root="/"):
    """Where the updater downloads the image destined for `slot` (slots.py
    re-exports it; it lives here so that clearing a job needs no slot code)."""
    if slot not in SLOTS:
        raise ValueError("bad slot %r" % (slot,))
    return boot._root(root) + "slots/" + slot + ".img"


def path_of(root, name):
    return boot._root(root) + name


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def load_job(root="/"):
    """The persisted job dict, or None (missing or garbled)."""
    try:
        with open(path_of(root, JOB_FILE)) as f:
            d = json.loads(f.read(2048))
        return d if isinstance(d, dict) and isinstance(d.get("id"), int) else None
    except (OSError, ValueError):
        return None


def save_job(job, root="/"):
    """Write-new-then-rename: a power cut leaves the old or the new file."""
    p = path_of(root, JOB_FILE)
    with open(p + ".tmp", "w") as f:
        f.write(json.dumps(job))
    os.rename(p + ".tmp", p)


FAILED_FILE = "ota_failed.json"
_MAX_FAILED = 6


def failed_versions(root="/"):
    """{version: reason} of versions that failed their trial (newest last);
    {} when missing or garbled (then only the record's last reason remains)."""
    try:
        if os.stat(path_of(root, FAILED_FILE))[6] > 1024:
            return {}
        with open(path_of(root, FAILED_FILE)) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def remember_failed(version, reason, root="/"):
    """Keep the reason a version failed (at most _MAX_FAILED, oldest dropped)."""
    if not isinstance(version, str) or not version:
        return
    d = failed_versions(root)
    d.pop(version, None)
    while len(d) >= _MAX_FAILED:
        d.pop(next(iter(d)))
    d[version] = str(reason)[:60]
    p = path_of(root, FAILED_FILE)
    try:
        with open(p + ".tmp", "w") as f:
            f.write(json.dumps(d))
        os.rename(p + ".tmp", p)
    except OSError:
        pass


def clean_orphans(root="/"):
    """At start-up with no valid job: a garbled or missing job file must not
    leave a staged (unverified) image on flash. Returns True if anything was
    removed."""
    if load_job(root) is not None:
        return False
    gone = False
    for p in [staging_path(s, root) for s in SLOTS] + [path_of(root, JOB_FILE), path_of(root, JOB_FILE) + ".tmp"]:
        try:
            os.remove(p)
            gone = True
        except OSError:
            pass
    return gone


def clear_job(root="/"):
    """Forget the job: its file and any staged image."""
    for s in SLOTS:
        remove_quietly(staging_path(s, root))
    remove_quietly(path_of(root, JOB_FILE) + ".tmp")
    remove_quietly(path_of(root, JOB_FILE))
