"""Bench: the agent's longest control period (work of one tick, real time)
with the OCPP link under each link fault of tests/test_ocpp_faults.py (the
real agent on a SimBoard in the unix port, virtual time)."""
import pathlib
import tempfile

from tests import test_ocpp_faults as F

for name in ("down", "stalled", "silent", "killed"):
    with tempfile.TemporaryDirectory() as d:
        res = getattr(F, "scenario_" + name)(pathlib.Path(d))
    print("BENCH ocpp link %s: worst control period|%.1f|ms|< 20" % (name, res["worst_us"] / 1000))
