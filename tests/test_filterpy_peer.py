# The filterpy peer (a textbook UKF on the same model) tracks the python reference when
# the reference's extras are idle: no noise adaptation, no gating.
import math
import random

import pytest

from bms import backends, model, ukf

pytest.importorskip("filterpy")
from bms_host.filterpy_peer import FilterpyPeer  # noqa: E402
from test_ukf_ulab import calibration, drive_current  # noqa: E402


def test_peer_tracks_reference_without_adaptation():
    cal = calibration()
    cap = cal["cell"]["capacity_ah"]
    p_list = model.pack(cal)
    cfg0 = ukf.default_cfg()
    cfg0[ukf.CFG_ADAPT] = 0.0           # no adaptive voltage noise
    cfg0[ukf.CFG_RV] = 10.0 * 10.0      # fixed R: 10 mV
    x0 = [70.0, 0.0, 0.0, 25.0, 25.0, 0.0]
    P0 = [0.0] * 36
    for k, s in enumerate((15.0, 10.0, 10.0, 2.0, 1.0, 50.0)):
        P0[k * 7] = s * s
    ref = backends.PythonBackend()
    x, P, cfg = list(x0), list(P0), list(cfg0)
    out = [0.0] * ukf.OUT_SIZE
    # A twin with the gate wide open: identical results prove the gate never clipped.
    xg, Pg, cfgg = list(x0), list(P0), list(cfg0)
    cfgg[ukf.CFG_GATE] = 1e9
    peer = FilterpyPeer(p_list, cfg0, x0, P0)
    sim = model.Simulator(p_list, 0.9, 25.0)
    rng = random.Random(3)
    u = ukf.make_u(0.0, 25.0, 1.0, 0.0, 25.0, p_list[model.CAP_AS])
    worst = 0.0
    for k in range(1000):
        i = drive_current(k, cap)
        v = sim.step(i, 25.0, 1.0) + rng.gauss(0.0, 0.002)
        ts = sim.ts + rng.gauss(0.0, 0.1)
        # the diffusion shift, advanced from the filter's state as the estimator does
        u[ukf.U_SHIFT] = model.shift_ahead(p_list, u[ukf.U_SHIFT], i - x[ukf.BIAS] / 1000.0,
                                           x[ukf.TC], 1.0)
        u[ukf.U_I] = i
        u[ukf.U_V] = v
        u[ukf.U_TS] = ts
        assert ref.step(x, P, p_list, cfg, u, out) == ukf.OK
        assert ref.step(xg, Pg, p_list, cfgg, u, out) == ukf.OK
        assert xg == x
        soc, sigma = peer.step(i, 25.0, 1.0, v, ts)
        assert cfg[ukf.CFG_RV] == cfg0[ukf.CFG_RV]
        worst = max(worst, abs(soc - x[ukf.SOC] / 100.0))
        assert sigma == pytest.approx(math.sqrt(P[0]) / 100.0, rel=0.05, abs=1e-4)
    assert worst < 1e-3, worst
    assert abs(x[ukf.SOC] / 100.0 - sim.soc) < 0.02
