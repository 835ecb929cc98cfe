# Finished charging sessions waiting to be published (QoS 1) - on flash, so
# that none is lost while the broker is away or across a reboot.
#
# Layout under <root>/sessions/:
#   sNNNNNNNN.log  append-only segments, NNNNNNNN = seq of their first record;
#                  one record per line: b"<seq> <json>\n" (the JSON carries "seq")
#   ack, ack1      the highest seq delivered (PUBACK seen), two self-checking
#                  copies b"<seq> <crc32 of the digits, 8 hex>\n", each replaced
#                  atomically (write <name>.tmp, then os.rename)
# A record leaves the log only through ack() (after its PUBACK) or by the
# drop-oldest policy: appending to a full log (max_records) drops the oldest
# record and counts it in `dropped`. Power cuts: an append interrupted mid-line
# leaves a line without "\n"; it is ignored and appends continue in a new
# segment. Delivery is at-least-once: a power cut between PUBACK and the ack
# write re-sends that record; the backend de-duplicates by (device, seq).
# Ack doubt re-sends, never drops: of two valid ack copies the LOWER wins; with
# no valid copy (flipped bit, garbage, a pre-checksum plain number) the ack is
# taken as "just before the oldest segment on flash", so every record still
# stored is sent again (`ack_doubt` says so).
import os
import json
from binascii import crc32
from micropython import const

_PER_SEGMENT = const(8)
_LINE_MAX = const(1024)
_ACKS = ("ack", "ack1")


def _join(root, name):
    return root.rstrip("/") + "/" + name


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _parse(line):
    # b"<seq> <json>\n" -> (seq, json bytes) or None when torn/corrupt
    if not line.endswith(b"\n"):
        return None
    sp = line.find(b" ")
    if sp <= 0:
        return None
    try:
        seq = int(line[:sp])
        body = line[sp + 1:-1]
        if type(json.loads(body)) is not dict:
            return None
    except (ValueError, TypeError):
        return None
    return seq, body


def _ack_line(seq):
    d = str(seq).encode()
    return d + (" %08x\n" % (crc32(d) & 0xFFFFFFFF)).encode()


def _check_ack(t):
    # b"<seq> <crc>\n" -> seq, or None when it does not check out
    sp = t.find(b" ")
    if sp <= 0 or len(t) != sp + 10 or t[-1:] != b"\n":
        return None
    d = t[:sp]
    for c in d:
        if not 48 <= c <= 57:
            return None
    if ("%08x" % (crc32(d) & 0xFFFFFFFF)).encode() != t[sp + 1:sp + 9]:
        return None
    return int(d)


class SessionLog:
    def __init__(self, root="/", max_records=50):
        if type(max_records) is not int or max_records < 1:
            raise ValueError("max_records must be a positive int")
        self.dir = _join(root, "sessions")
        self.max = max_records
        self.dropped = 0
        self._head = None
        if not _exists(self.dir):
            os.mkdir(self.dir)
        acked = self._read_ack()
        segs = []
        for name in os.listdir(self.dir):
            if name.startswith("s") and name.endswith(".log"):
                try:
                    segs.append(int(name[1:-4]))
                except ValueError:
                    pass
        segs.sort()
        self.ack_doubt = acked is None
        if acked is None:      # no trustworthy ack: everything on flash goes out again
            acked = segs[0] - 1 if segs else 0
        self._acked = acked
        self._segs = segs
        self._last = self._acked
        self._fresh = True        # next append opens a new segment
        self._in_last = 0
        if segs:
            last, n, torn = self._scan(segs[-1])
            if last is None:
                os.remove(self._seg(segs.pop()))
            else:
                self._last = max(self._last, last)
                self._in_last = n
                self._fresh = torn or n >= _PER_SEGMENT
        if segs and self._last < segs[-1] - 1:
            self._last = segs[-1] - 1
        self._gc()
        while len(self) > self.max:
            self._drop_one()

    # ---- public -----------------------------------------------------------

    def __len__(self):
        return self._last - self._acked

    def append(self, rec):
        """Store one finished-session record (a JSON-able dict) durably."""
        if type(rec) is not dict:
            raise ValueError("session record must be a dict")
        d = dict(rec)
        seq = self._last + 1
        d["seq"] = seq
        line = str(seq).encode() + b" " + json.dumps(d).encode() + b"\n"
        if len(line) > _LINE_MAX:
            raise ValueError("session record too large")
        if len(self) >= self.max:
            self._drop_one()
        if self._fresh or not self._segs:
            self._segs.append(seq)
            self._in_last = 0
            self._fresh = False
        with open(self._seg(self._segs[-1]), "ab") as f:
            f.write(line)
        self._last = seq
        self._in_last += 1
        if self._in_last >= _PER_SEGMENT:
            self._fresh = True
        return seq

    def peek_line(self):
        """(seq, JSON bytes) of the oldest record, or None."""
        if self._head is None and len(self):
            self._head = self._find()
        return self._head

    def peek(self):
        h = self.peek_line()
        return None if h is None else json.loads(h[1])

    def ack(self, seq=None):
        """Remove the oldest record (only if its seq is `seq`, when given)."""
        h = self.peek_line()
        if h is None or (seq is not None and h[0] != seq):
            return False
        self._set_ack(h[0])
        return True

    def pop(self):
        rec = self.peek()
        if rec is not None:
            self.ack()
        return rec

    # ---- internals --------------------------------------------------------

    def _seg(self, first):
        return "%s/s%08d.log" % (self.dir, first)

    def _read_ack(self):
        # the delivered seq; 0 without any ack file; None on doubt
        vals = []
        missing = 0
        for name in _ACKS:
            try:
                with open(self.dir + "/" + name, "rb") as f:
                    t = f.read(40)
            except OSError:
                missing += 1
                continue
            v = _check_ack(t)
            if v is not None:
                vals.append(v)
        if vals:
            return min(vals)
        return 0 if missing == len(_ACKS) else None

    def _set_ack(self, seq):
        data = _ack_line(seq)
        for name in _ACKS:
            path = self.dir + "/" + name
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.rename(tmp, path)
            except OSError:   # FAT cannot rename over a file (not atomic there)
                try:
                    os.remove(path)
                except OSError:
                    pass
                os.rename(tmp, path)
        self._acked = seq
        self._head = None
        self._gc()

    def _drop_one(self):
        h = self.peek_line()
        if h is not None:
            self.dropped += 1
            self._set_ack(h[0])

    def _scan(self, first):
        # -> (last valid seq or None, lines, torn tail?)
        last = None
        n = 0
        torn = False
        with open(self._seg(first), "rb") as f:
            while True:
                line = f.readline()
                if not line:
                    break
                n += 1
                r = _parse(line)
                if r is None:
                    torn = True
                else:
                    last = r[0]
                    torn = False
        return last, n, torn

    def _find(self):
        segs = self._segs
        acked = self._acked
        for i in range(len(segs)):
            if i + 1 < len(segs) and segs[i + 1] - 1 <= acked:
                continue
            with open(self._seg(segs[i]), "rb") as f:
                while True:
                    line = f.readline()
                    if not line:
                        break
                    r = _parse(line)
                    if r is not None and r[0] > acked:
                        if r[0] > acked + 1:   # corrupt records in between: lost
                            self.dropped += r[0] - acked - 1
                            self._acked = r[0] - 1
                        return r
        # nothing readable left (corruption): forget the rest
        self.dropped += len(self)
        self._acked = self._last
        return None

    def _gc(self):
        segs = self._segs
        while len(segs) > 1 and segs[1] - 1 <= self._acked:
            try:
                os.remove(self._seg(segs[0]))
            except OSError:
                pass
            segs.pop(0)
        if len(segs) == 1 and self._last <= self._acked:
            # everything delivered: start the next append in a new segment
            try:
                os.remove(self._seg(segs[0]))
            except OSError:
                pass
            segs.pop(0)
            self._fresh = True
