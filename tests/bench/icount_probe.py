# Run by tests/bench/host_icount.py under valgrind (not a bench_ script):
#   micropython icount_probe.py ed25519|step N
# does the set-up, then N Ed25519 verifies or N Evse.step() calls; the host
# side subtracts the N=0 count.
import sys
what, n = sys.argv[1], int(sys.argv[2])
if what == "ed25519":
    from firmware.ota import ed25519
    PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    SIG = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
                        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    ed25519.verify(PK, b"", SIG)      # base table built, as on a running board
    msg = bytes(32)
    for _ in range(n):
        ed25519.verify(PK, msg, SIG)
else:
    from firmware.evse import Evse, Sense
    e = Evse(32)
    s = Sense(cp_high_mv=6000, cp_low_mv=-12000, energy_wh=1234.5)
    t = 1000
    for _ in range(40):               # into C (charging), relay closed
        t += 20
        c = e.step(t, s)
        s.relay_closed = c.relay
    for _ in range(n):
        t += 20
        e.step(t, s)
