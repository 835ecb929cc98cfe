# firmware/sessionlog.py: durable, bounded queue of finished sessions.
import os
import mptest
from firmware.hal import simflash
from firmware.sessionlog import SessionLog

_dir = None


def setup():
    global _dir
    _dir = simflash.tmpdir("evse-slog")


def teardown():
    simflash.rmtree(_dir)


def _rec(i):
    return {"id": i, "start_ms": i * 1000, "stop_ms": i * 1000 + 500, "reason": "ev", "energy_wh": i * 10,
            "tag": None}


def _segments():
    return sorted(n for n in os.listdir(_dir + "/sessions") if n.endswith(".log"))


def test_fifo_with_ack():
    log = SessionLog(_dir)
    mptest.eq(len(log), 0)
    mptest.eq(log.peek(), None)
    mptest.eq(log.ack(), False)
    for i in range(3):
        log.append(_rec(i))
    mptest.eq(len(log), 3)
    r = log.peek()
    mptest.eq(r["id"], 0)
    mptest.eq(r["seq"], 1)
    mptest.eq(log.peek()["id"], 0)          # peek does not remove
    mptest.true(log.ack(1))
    mptest.eq(log.pop()["id"], 1)
    mptest.eq(len(log), 1)
    seq, line = log.peek_line()
    mptest.eq(seq, 3)
    mptest.true(line.startswith(b"{") and b'"id": 2' in line, line)


def test_ack_of_another_seq_is_ignored():
    log = SessionLog(_dir)
    log.append(_rec(0))
    log.append(_rec(1))
    mptest.eq(log.ack(2), False)            # not the head: nothing removed
    mptest.eq(len(log), 2)
    mptest.eq(log.peek()["id"], 0)


def test_records_survive_reboot():
    log = SessionLog(_dir)
    for i in range(11):                     # spans two segments
        log.append(_rec(i))
    log.ack()
    log.ack()
    del log
    log = SessionLog(_dir)                  # "reboot": a new object over the same files
    mptest.eq(len(log), 9)
    mptest.eq(log.peek()["id"], 2)
    mptest.eq(log.append(_rec(99)), 12)     # sequence numbers continue
    got = []
    while len(log):
        got.append(log.pop()["id"])
    mptest.eq(got, list(range(2, 11)) + [99])
    log = SessionLog(_dir)
    mptest.eq(len(log), 0)
    mptest.eq(log.append(_rec(5)), 13)      # still monotonic after everything was delivered


def test_full_log_drops_oldest():
    log = SessionLog(_dir, max_records=5)
    for i in range(8):
        log.append(_rec(i))
    mptest.eq(len(log), 5)
    mptest.eq(log.dropped, 3)
    mptest.eq([log.pop()["id"] for _ in range(5)], [3, 4, 5, 6, 7])
    log = SessionLog(_dir, max_records=5)
    mptest.eq(len(log), 0)


def test_smaller_max_after_reboot_drops_oldest():
    log = SessionLog(_dir, max_records=10)
    for i in range(6):
        log.append(_rec(i))
    log = SessionLog(_dir, max_records=4)
    mptest.eq(len(log), 4)
    mptest.eq(log.peek()["id"], 2)


def test_files_stay_bounded():
    log = SessionLog(_dir, max_records=10)
    for i in range(200):
        log.append(_rec(i))
        if i % 3 == 0:
            log.ack()
    mptest.eq(len(log), 10)
    mptest.true(len(_segments()) <= 3, _segments())
    while len(log):
        log.ack()
    mptest.true(len(_segments()) <= 1, _segments())


def test_power_cut_mid_append_is_ignored():
    log = SessionLog(_dir)
    log.append(_rec(0))
    log.append(_rec(1))
    seg = _dir + "/sessions/" + _segments()[-1]
    with open(seg, "ab") as f:
        f.write(b'3 {"id": 2, "sta')     # the append that the power cut interrupted
    log = SessionLog(_dir)
    mptest.eq(len(log), 2)
    log.append(_rec(7))                  # continues in a fresh segment
    log = SessionLog(_dir)
    mptest.eq(len(log), 3)
    mptest.eq([log.pop()["id"] for _ in range(3)], [0, 1, 7])


def test_power_cut_in_first_line_of_segment():
    log = SessionLog(_dir)
    with open(_dir + "/sessions/s00000001.log", "wb") as f:
        f.write(b'1 {"id": 0')
    log = SessionLog(_dir)
    mptest.eq(len(log), 0)
    log.append(_rec(4))
    log = SessionLog(_dir)
    mptest.eq(log.pop()["id"], 4)


def test_power_cut_during_ack_resends():
    log = SessionLog(_dir)
    log.append(_rec(0))
    log.append(_rec(1))
    with open(_dir + "/sessions/ack.tmp", "w") as f:   # new ack written, rename never happened
        f.write("1 83dcefb7\n")
    log = SessionLog(_dir)
    mptest.eq(len(log), 2)                 # at-least-once: record 0 is sent again
    mptest.eq(log.peek()["id"], 0)
    log.ack()
    log = SessionLog(_dir)
    mptest.eq(log.peek()["id"], 1)


def test_bad_records_refused_and_nothing_stored():
    log = SessionLog(_dir)
    log.append(_rec(0))
    for bad in (None, [1, 2], "text", {"blob": "x" * 2000}):
        mptest.raises(ValueError, log.append, bad)
    mptest.eq(len(log), 1)
    log = SessionLog(_dir)
    mptest.eq(len(log), 1)
    mptest.raises(ValueError, SessionLog, _dir, 0)


def test_corrupt_record_is_skipped_and_counted():
    log = SessionLog(_dir)
    for i in range(3):
        log.append(_rec(i))
    seg = _dir + "/sessions/" + _segments()[0]
    with open(seg, "rb") as f:
        lines = f.read().split(b"\n")
    lines[0] = b"1 {garbage}"
    with open(seg, "wb") as f:
        f.write(b"\n".join(lines))
    log = SessionLog(_dir)
    mptest.eq(log.peek()["id"], 1)
    mptest.eq(log.dropped, 1)
    mptest.eq(len(log), 2)


def _acks():
    out = []
    for name in ("ack", "ack1"):
        try:
            with open(_dir + "/sessions/" + name, "rb") as f:
                out.append(f.read())
        except OSError:
            out.append(None)
    return out


def _put(name, data):
    with open(_dir + "/sessions/" + name, "wb") as f:
        f.write(data)


def test_corrupt_ack_resends_never_drops():
    # records 1..6, 1..2 delivered; then the ack copies are damaged
    log = SessionLog(_dir)
    for i in range(6):
        log.append(_rec(i))
    log.ack(1)
    log.ack(2)
    good = _acks()
    mptest.eq(good[0], good[1])
    mptest.true(good[0].startswith(b"2 "), good)
    flip = bytearray(good[0])
    flip[0] ^= 0x0B                                   # '2' -> '9': a flipped bit in the number
    cases = (
        (b"9\n", b"9\n"),                            # plain numbers: no check (pre-checksum format)
        (bytes(flip), bytes(flip)),
        (b"", b""),
        (b"\xff" * 12, None),
        (good[0][:-3], good[0][:-3]),                  # torn
        (bytes(flip), None),
    )
    for a, b in cases:
        _put("ack", a)
        if b is None:
            os.remove(_dir + "/sessions/ack1")
        else:
            _put("ack1", b)
        log = SessionLog(_dir)
        mptest.true(log.ack_doubt, a, b)
        mptest.true(log.peek()["seq"] <= 3, "a record would be dropped", a, b, log.peek())
        mptest.eq(log.dropped, 0)
        mptest.eq(log.peek()["seq"], 1)             # everything on flash goes out again
        mptest.eq(len(log), 6)
    # one copy damaged: the other one is used, nothing re-sent or lost
    _put("ack", good[0])
    _put("ack1", bytes(flip))
    log = SessionLog(_dir)
    mptest.eq((log.ack_doubt, log.peek()["seq"], len(log)), (False, 3, 4))
    # both valid but different (power cut between the two writes): the lower wins
    log.ack(3)
    _put("ack1", good[0])
    log = SessionLog(_dir)
    mptest.eq((log.ack_doubt, log.peek()["seq"]), (False, 3))
    # delivery continues and the copies agree again
    for seq in (3, 4, 5, 6):
        mptest.true(log.ack(seq), seq)
    a = _acks()
    mptest.eq(a[0], a[1])
    log = SessionLog(_dir)
    mptest.eq(len(log), 0)
    mptest.eq(log.append(_rec(9)), 7)                # sequence numbers keep counting up


def test_ack_writes_both_checked_copies():
    log = SessionLog(_dir)
    mptest.eq(_acks(), [None, None])
    log.append(_rec(0))
    log.append(_rec(1))
    log.ack(1)
    a = _acks()
    mptest.eq(a[0], a[1])
    mptest.eq(a[0][:2], b"1 ")
    log = SessionLog(_dir)
    mptest.eq((log.ack_doubt, log.peek()["seq"]), (False, 2))
