"""Rollout report: JSON plus a self-contained HTML page (inline SVG chart of
the rollout over time, no external scripts or styles), from the state DB.

    js, html = write(db, rollout_id, "build")   # build/rollout-<id>.json/.html (see report_base)
    rep = build(db, rollout_id)                 # the same as a dict
"""
import collections
import html
import json
import math
import os
import time

STARTED = ("config", "sent")
OUTCOMES = ("installed", "failed", "skipped")


def _wname(w, canary):
    return "canary" if (w == 0 and canary) else "wave %d" % (w + (0 if canary else 1))


def summary(r, devices):
    p = r["params"]
    canary = p.get("canary_count")
    nwaves = len(p["groups"])
    counts = [collections.Counter() for _ in range(nwaves)]
    sizes = [0] * nwaves
    for d in devices:
        counts[d["wave"]][d["state"]] += 1
        sizes[d["wave"]] += 1
    opened = max([d["wave"] for d in devices if d["state"] != "pending"] or [0])
    waves = []
    for w in range(nwaves):
        c = counts[w]
        waves.append({"name": _wname(w, canary), "size": sizes[w] - c["skipped"], "installed": c["installed"],
                      "failed": c["failed"], "running": c["config"] + c["sent"], "waiting": c["waiting"],
                      "pending": c["pending"], "skipped": c["skipped"], "open": w <= opened})
    st = collections.Counter(d["status"] for d in devices if d["status"] and d["state"] != "pending")
    fails = [{"device": d["device"], "reason": d["reason"]} for d in devices if d["state"] == "failed"]
    return {"id": r["id"], "version": p["release"]["version"], "board": p["release"]["board"],
            "state": r["state"], "reason": r["reason"], "waves": waves, "statuses": dict(st),
            "failures": fails}


def timeline(events, t0):
    """Cumulative counts over time: [[t_rel_s, started, installed, failed, running]]
    (running = started and not yet installed or failed)."""
    started, outcome = set(), {}
    n_ok = n_bad = running = 0
    pts = [[0.0, 0, 0, 0, 0]]
    for e in events:
        dev, kind = e["device"], e["kind"]
        if dev is None:
            continue
        if kind in STARTED and dev not in started:
            started.add(dev)
            if dev not in outcome:
                running += 1
        elif kind in ("installed", "failed") and outcome.get(dev) != kind:
            old = outcome.get(dev)
            if old is None and dev in started:
                running -= 1
            n_ok += (kind == "installed") - (old == "installed")
            n_bad += (kind == "failed") - (old == "failed")
            outcome[dev] = kind
        else:
            continue
        pts.append([round(e["t"] - t0, 3), len(started), n_ok, n_bad, running])
    return _thin(pts, 400)


def _thin(pts, n):
    if len(pts) <= n:
        return pts
    step = len(pts) / float(n)
    out = [pts[int(i * step)] for i in range(n)]
    out.append(pts[-1])
    return out


def build(db, rid, peak_rss_kb=None):
    r = db.get(rid)
    devices = db.devices(rid)
    events = db.events(rid)
    t0 = r["created"]
    t_end = r["finished"] or (events[-1]["t"] if events else t0)
    marks = [{"t": round(e["t"] - t0, 3), "kind": e["kind"], "detail": e["detail"]}
             for e in events if e["device"] is None and e["kind"] in ("wave", "state", "stopping", "controller")]
    p = r["params"]
    devs = []
    for d in devices:
        devs.append({"device": d["device"], "wave": d["wave"], "state": d["state"], "status": d["status"],
                     "reason": d["reason"], "version": d["version"], "request_id": d["request_id"],
                     "commands_sent": d["cmds_sent"],
                     "sent_s": None if d["sent_at"] is None else round(d["sent_at"] - t0, 3),
                     "done_s": None if d["finished_at"] is None else round(d["finished_at"] - t0, 3)})
    durations = sorted(x["done_s"] - x["sent_s"] for x in devs
                       if x["state"] == "installed" and x["sent_s"] is not None and x["done_s"] is not None)
    rep = {
        "rollout": rid,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
        "duration_s": round(t_end - t0, 3),
        "release": p["release"],
        "options": {k: p.get(k) for k in ("canary", "waves", "groups", "success_threshold", "error_threshold",
                                          "max_concurrent", "install_window", "install_at", "device_timeout",
                                          "filter")},
        "summary": summary(r, devices),
        "counts": dict(collections.Counter(d["state"] for d in devices)),
        "install_time_s": ({"median": durations[len(durations) // 2], "max": durations[-1]}
                           if durations else None),
        "timeline": timeline(events, t0),
        "marks": marks,
        "devices": devs,
    }
    if peak_rss_kb is not None:
        rep["controller_peak_rss_kb"] = peak_rss_kb
    return rep


def _db_identity(db):
    return "%s#%s" % (os.path.abspath(db.path), db.salt)


def report_base(db, rid, outdir):
    """File name (without extension) of rollout rid's report in outdir:
    rollout-N, unless that file holds the report of another database (every
    report names its database): then rollout-N-STEM-TAG (the database's file
    name and a tag of its path), so reports of two databases never overwrite
    each other."""
    base = "rollout-%d" % rid
    me = _db_identity(db)
    try:
        with open(os.path.join(outdir, base + ".json")) as f:
            other = json.load(f).get("database")
    except (OSError, ValueError, AttributeError):
        other = None
    if other is None or other == me:
        return base
    import hashlib
    stem = os.path.splitext(os.path.basename(db.path))[0]
    return "%s-%s-%s" % (base, stem, hashlib.sha256(me.encode()).hexdigest()[:8])


def write(db, rid, outdir="build", peak_rss_kb=None):
    rep = build(db, rid, peak_rss_kb)
    rep["database"] = _db_identity(db)
    if not os.path.isdir(outdir):
        parent = os.path.dirname(os.path.abspath(outdir))
        if not os.path.isdir(parent):
            raise ValueError("report directory %s: %s does not exist (not created)" % (outdir, parent))
        os.mkdir(outdir)
    base = report_base(db, rid, outdir)
    js = os.path.join(outdir, base + ".json")
    hp = os.path.join(outdir, base + ".html")
    with open(js, "w") as f:
        json.dump(rep, f, indent=1)
        f.write("\n")
    with open(hp, "w") as f:
        f.write(to_html(rep))
    return js, hp


# ---- HTML ------------------------------------------------------------------------------------

def y_ticks(total, most=5):
    """Axis labels for counts 0..total: distinct integers, evenly spaced
    (step 1, 2, 5, 10, 20, 50, ...), from 0 to the first step >= total, at
    most `most` + 1 of them."""
    total = max(1, int(math.ceil(total)))
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m * most >= total:
                s = step * m
                n = -(-total // s)
                return [i * s for i in range(n + 1)]
        step *= 10


def svg_chart(rep, w=860, h=320):
    pts = rep["timeline"]
    ticks = y_ticks(sum(x["size"] + x["skipped"] for x in rep["summary"]["waves"]) or 1)
    total = ticks[-1]
    tmax = max(rep["duration_s"], pts[-1][0] if pts else 0, 1e-3)
    L, R, T, B = 50, 20, 20, 40
    pw, ph = w - L - R, h - T - B

    def X(t):
        return L + pw * t / tmax

    def Y(n):
        return T + ph * (1 - n / float(total))

    def line(idx, color, name):
        if not pts:
            return ""
        d = []
        prev = None
        for p in pts + [[tmax] + pts[-1][1:]]:
            if prev is not None:
                d.append("%.1f,%.1f" % (X(p[0]), Y(prev[idx])))   # steps
            d.append("%.1f,%.1f" % (X(p[0]), Y(p[idx])))
            prev = p
        return ('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>'
                % (color, " ".join(d), name))

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="11">' % (w, h, w, h),
           '<rect x="%d" y="%d" width="%d" height="%d" fill="#fafafa" stroke="#ccc"/>' % (L, T, pw, ph)]
    for n in ticks:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/>' % (L, L + pw, Y(n), Y(n)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (L - 4, Y(n) + 4, n))
    for i in range(6):
        t = tmax * i / 5.0
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (X(t), T + ph + 14, _fmt_s(t)))
    out.append('<text x="%d" y="%d" text-anchor="middle">time since start</text>' % (L + pw // 2, h - 6))
    for m in rep["marks"]:
        if m["kind"] == "controller":
            color = "#999"
        elif m["kind"] == "wave":
            color = "#7a5"
        else:
            color = "#d80"
        x = X(m["t"])
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-dasharray="4 3">'
                   '<title>%s</title></line>' % (x, x, T, T + ph, color,
                                                 html.escape("%s: %s" % (m["kind"], m["detail"] or ""))))
    out.append(line(1, "#888", "started"))
    out.append(line(4, "#2a6fdb", "in progress"))
    out.append(line(2, "#1a9850", "installed"))
    out.append(line(3, "#d73027", "failed"))
    lx = L + 10
    for name, color in (("started", "#888"), ("in progress", "#2a6fdb"), ("installed", "#1a9850"),
                        ("failed", "#d73027"), ("wave opens", "#7a5"), ("state change", "#d80")):
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>'
                   % (lx, T + 6, color, lx + 14, T + 15, name))
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out)


def _fmt_s(t):
    if t < 120:
        return "%.0fs" % t if t >= 10 else "%.1fs" % t
    if t < 7200:
        return "%.0fm" % (t / 60)
    return "%.1fh" % (t / 3600)


def to_html(rep):
    e = html.escape
    s = rep["summary"]
    rows = []
    for w in s["waves"]:
        rows.append("<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>"
                    % (e(w["name"]), w["size"], w["installed"], w["failed"], w["running"] + w["waiting"],
                       w["pending"] + w["skipped"]))
    fails = "".join("<tr><td>%s</td><td>%s</td></tr>" % (e(f["device"]), e(f["reason"] or ""))
                    for f in s["failures"]) or '<tr><td colspan="2">none</td></tr>'
    devs = "".join("<tr><td>%s</td><td>%d</td><td class=\"%s\">%s</td><td>%s</td><td>%s</td><td>%s</td>"
                   "<td>%s</td></tr>"
                   % (e(d["device"]), d["wave"], e(d["state"]), e(d["state"]), e(d["status"] or ""),
                      e(d["version"] or ""), d["commands_sent"], e(d["reason"] or ""))
                   for d in rep["devices"][:2000])
    more = ("<p>(first 2000 of %d devices; all in the JSON report)</p>" % len(rep["devices"])
            if len(rep["devices"]) > 2000 else "")
    opts = "".join("<tr><td>%s</td><td>%s</td></tr>" % (e(k), e(json.dumps(v))) for k, v in rep["options"].items())
    st = ", ".join("%s %d" % kv for kv in sorted(s["statuses"].items())) or "-"
    return """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Rollout %(id)d: %(board)s %(version)s</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}
th{background:#f0f0f0} .installed{color:#1a9850} .failed{color:#d73027} .skipped{color:#888}
.state{font-size:1.2em}
</style></head><body>
<h1>Rollout %(id)d: %(board)s %(version)s</h1>
<p class="state">State: <b>%(state)s</b>%(reason)s &mdash; created %(created)s, %(dur)s</p>
<p>Image: <code>%(url)s</code> (sha256 %(sha)s)</p>
%(svg)s
<h2>Groups</h2>
<table><tr><th>group</th><th>size</th><th>installed</th><th>failed</th><th>running</th><th>not started</th></tr>
%(rows)s</table>
<p>Last firmware status of the devices started: %(st)s</p>
<h2>Failures</h2>
<table><tr><th>device</th><th>reason</th></tr>%(fails)s</table>
<h2>Options</h2><table>%(opts)s</table>
<h2>Devices</h2>
<table><tr><th>device</th><th>group</th><th>outcome</th><th>last status</th><th>version</th><th>commands</th>
<th>reason</th></tr>%(devs)s</table>%(more)s
</body></html>
""" % {"id": s["id"], "board": e(s["board"]), "version": e(s["version"]), "state": e(s["state"]),
       "reason": (" (%s)" % e(s["reason"])) if s["reason"] else "", "created": e(rep["created"]),
       "dur": _fmt_s(rep["duration_s"]), "url": e(rep["release"].get("url") or ""),
       "sha": e((rep["release"].get("sha256") or "?")[:16]), "svg": svg_chart(rep), "rows": "".join(rows),
       "st": e(st), "fails": fails, "opts": opts, "devs": devs, "more": more}
