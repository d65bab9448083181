"""The calibrated model over recorded segments (device/bms/model.py's equations,
vectorised over records) and what the refit computes with it: the states, the
least-squares fits of the R0 scale, capacity and thermal terms, the held-back errors,
and the SOC the device's own filter shows at the held-back rests. See refit.py."""
import numpy as np
from scipy.optimize import least_squares

from . import use_device_code
from .ecm import Tables, kinetic_np, shift_path
from .refit_records import _rest_ends

SCALE_BOUNDS = (0.3, 3.0)


# ---- model pieces, vectorised over records (same equations as device/bms/model.py)

class CellModel:
    def __init__(self, cal):
        # ecm.Tables: the device's tables with its defaults for r0c, r2c and i0
        self.tables = Tables.from_cal(cal)
        self.cap_ah = float(cal["cell"]["capacity_ah"])
        self.th = dict(cal["thermal"])

    def lookup(self, name, soc, temp):
        return self.tables.lookup(name, soc, temp)

    def core_temp(self, seg, heat_w, c_scale=1.0):
        # core node: C_core dTc/dt = Q - (Tc - Ts)/R_cs, backward Euler with measured Ts
        c = self.th["c_core_j_per_k"] * c_scale
        r = self.th["r_core_surf_k_per_w"]
        tc = [float(seg.ts[0])]
        for k in range(1, len(seg.t)):
            dt = seg.dt[k] or 1.0
            tc.append((c / dt * tc[-1] + heat_w[k] + seg.ts[k] / r) / (c / dt + 1.0 / r))
        return tc

    def parts(self, seg, soc0, cap_ah, tc):
        """Per record of one segment: v without the R0 drop, R0 * i (i: the current the
        record read), the heat less its ohmic part, and the ohmic heat's resistance times
        iq (model.step: rh_ohm, else R0; iq: the current over the interval before the
        record); the ohmic heat is iq * r0_scale * that."""
        soc = soc0 - np.cumsum(seg.iq * seg.dt) / (cap_ah * 3600.0)
        soc_prev = np.concatenate(([soc0], soc[:-1]))
        tc = np.asarray(tc, float)
        tc_prev = np.concatenate(([tc[0]], tc[:-1]))
        r1 = self.lookup("r1_ohm", soc_prev, tc_prev)
        # R2 on charge steps from r2c_ohm (model.step chooses by the sign of the current)
        r2 = np.where(seg.iq >= 0, self.lookup("r2_ohm", soc_prev, tc_prev),
                      self.lookup("r2c_ohm", soc_prev, tc_prev))
        a1 = np.exp(-seg.dt / self.lookup("tau1_s", soc_prev, tc_prev))
        a2 = np.exp(-seg.dt / self.lookup("tau2_s", soc_prev, tc_prev))
        b1 = (r1 * (1.0 - a1) * seg.iq).tolist()
        b2 = (r2 * (1.0 - a2) * seg.iq).tolist()
        a1 = a1.tolist()
        a2 = a2.tolist()
        v1 = [0.0] * len(b1)
        v2 = [0.0] * len(b1)
        x1 = x2 = 0.0  # a boot is assumed to start from rest
        for k in range(len(b1)):
            x1 = a1[k] * x1 + b1[k]
            x2 = a2[k] * x2 + b2[k]
            v1[k] = x1
            v2[k] = x2
        v1 = np.asarray(v1)
        v2 = np.asarray(v2)
        r0 = np.where(seg.i >= 0, self.lookup("r0_ohm", soc, tc),
                      self.lookup("r0c_ohm", soc, tc))
        kin = kinetic_np(seg.i, self.lookup("i0_a", soc, tc), tc)
        # the diffusion shift (model.shift_ahead) from rest at the segment's start
        d = shift_path(np.concatenate(([0.0], np.cumsum(seg.dt))),
                       np.concatenate(([0.0], seg.iq)), np.concatenate(([tc[0]], tc)),
                       self.tables.diffusion)[1:]
        base = self.tables.ocv(soc - d, tc) - v1 - v2 - kin
        # the loss that heats the cell, less the ohmic part: i*(k1 v1 + kinetic) + k2 i v2
        k1, k2 = self.tables.heat_v1, self.tables.heat_v2
        rh = self.lookup("rh_ohm", soc, tc) if self.tables.heat_rh else r0
        # the heat is the interval's: its kinetic loss at the interval's current
        kin_q = kin if seg.iq is seg.i else kinetic_np(seg.iq, self.lookup("i0_a", soc, tc), tc)
        return base, r0 * seg.i, seg.iq * (k1 * v1 + kin_q) + k2 * seg.iq * v2, rh * seg.iq


def _states(model, segs, scale, cap, soc0s, phi):
    """Per segment: (v_model, core temperature, heat), the core temperature following
    the model's own heat (three passes, as the heat depends on the core temperature)."""
    out = []
    for s, z0 in zip(segs, soc0s, strict=True):
        s.set_phase(phi)
        tc = list(s.ts)
        for _ in range(3):
            base, x, q, xh = model.parts(s, z0, cap, tc)
            heat = s.iq * scale * xh + q
            tc = model.core_temp(s, heat)
        base, x, q, xh = model.parts(s, z0, cap, tc)
        out.append((base - scale * x, tc, s.iq * scale * xh + q))
    return out


def _fit(model, segs, fit_r0, fit_cap):
    """Fit on the fitted rows: R0 scale (closed form inside, when fit_r0), capacity factor
    (when fit_cap), the steps' phase and each segment's initial SOC; with neither, the
    old calibration's own phase and initial SOCs. Returns (scale, capacity_ah, phase,
    soc0 per segment)."""
    tcs = [list(s.ts) for s in segs]
    rows = [s.fit_rows for s in segs]
    n = len(segs)

    def evaluate(theta):
        cap = model.cap_ah * (theta[0] if fit_cap else 1.0)
        ys, xs = [], []
        for s, z0, tc, m in zip(segs, theta[2:], tcs, rows, strict=True):
            s.set_phase(theta[1])
            base, x, _, _ = model.parts(s, z0, cap, tc)
            ys.append((base - s.v)[m])
            xs.append(x[m])
        y, x = np.concatenate(ys), np.concatenate(xs)
        k = 1.0
        if fit_r0 and x @ x > 0:
            k = float(np.clip(y @ x / (x @ x), *SCALE_BOUNDS))
        return k, cap, y - k * x

    theta = np.array([1.0, 0.5] + [float(np.clip(s.soc[0], 0.0, 1.0)) for s in segs])
    lo = np.array([0.5 if fit_cap else 1.0 - 1e-9, 0.0] + [0.0] * n)
    hi = np.array([1.5 if fit_cap else 1.0 + 1e-9, 1.0] + [1.0] * n)
    scale = 1.0
    for _ in range(3):  # core temperature depends on the heat, hence on the R0 scale
        theta = least_squares(lambda th: evaluate(th)[2], theta, bounds=(lo, hi),
                              x_scale=0.05, diff_step=1e-3).x
        scale, cap, _ = evaluate(theta)
        tcs = [tc for _, tc, _ in _states(model, segs, scale, cap, theta[2:], theta[1])]
    return scale, cap, float(theta[1]), list(theta[2:])


def _voltage_rms(model, segs, scale, cap, phi, soc0s, which):
    err = []
    for s, (vm, _, _) in zip(segs, _states(model, segs, scale, cap, soc0s, phi), strict=True):
        m = s.hold_rows if which == "hold" else s.fit_rows
        err.append((vm - s.v)[m])
    e = np.concatenate(err)
    return float(np.sqrt(np.mean(e ** 2))) if len(e) else float("nan")


def _thermal_predict(th, s, heat, k_sa, k_c):
    cc, cs = th["c_core_j_per_k"] * k_c, th["c_surf_j_per_k"] * k_c
    g1, g2 = 1.0 / th["r_core_surf_k_per_w"], 1.0 / (th["r_surf_amb_k_per_w"] * k_sa)
    ta = float(s.ts[0])  # a boot is taken to start in equilibrium with the ambient
    tc = ts = ta
    out = [ts]
    for k in range(1, len(s.t)):
        dt = s.dt[k] or 1.0
        kc, ks = cc / dt, cs / dt
        a11, a22 = kc + g1, ks + g1 + g2
        b1, b2 = kc * tc + heat[k], ks * ts + g2 * ta
        det = a11 * a22 - g1 * g1
        tc, ts = (b1 * a22 + g1 * b2) / det, (a11 * b2 + g1 * b1) / det
        out.append(ts)
    return np.asarray(out)


def _fit_thermal(model, segs, heats):
    """Scales (r_surf_amb, heat capacities) from the measured surface temperature of the
    fitted rows."""
    def resid(theta):
        return np.concatenate([(_thermal_predict(model.th, s, h, *theta) - s.ts)[~s.hold]
                               for s, h in zip(segs, heats, strict=True)])

    r = least_squares(resid, [1.0, 1.0], bounds=([0.2, 0.2], [5.0, 5.0]), diff_step=1e-3)
    return [float(x) for x in r.x]


def _temp_rms(model, segs, heats, k_sa, k_c):
    e = np.concatenate([(_thermal_predict(model.th, s, h, k_sa, k_c) - s.ts)[s.hold]
                        for s, h in zip(segs, heats, strict=True)])
    return float(np.sqrt(np.mean(e ** 2)))


# ---- SOC on the held-back rests, through the device's own filter

def _filter_soc(cal, seg):
    """The device filter's SOC over a segment (started from the first record, as at
    boot), with the fastest backend this host has."""
    from bms import backends, estimator  # on the path once use_device_code() has run

    est = estimator.CellEstimator(cal, backends.make(None))
    out = []
    prev = None
    for k in range(len(seg.t)):
        dt = 0.0 if prev is None else seg.t[k] - prev
        est.step(float(seg.iq[k]), float(seg.v[k]), float(seg.ts[k]), float(seg.ts[0]), dt)
        prev = seg.t[k]
        out.append(est.soc())
    return out


def _soc_check(model, old_cal, new_cal, segs, phi):
    """(old, new) SOC RMSE in points at the held-back rest ends, or None without rests."""
    use_device_code()
    e_old, e_new = [], []
    for s in segs:
        s.set_phase(phi)
        ends = _rest_ends(s, model.cap_ah)
        if not len(ends):
            continue
        ref = np.array([model.tables.soc_from_ocv(float(s.v[k]), float(s.ts[k]))
                        for k in ends])
        e_old.append(np.asarray(_filter_soc(old_cal, s))[ends] - ref)
        e_new.append(np.asarray(_filter_soc(new_cal, s))[ends] - ref)
    if not e_old:
        return None
    rms = [100.0 * float(np.sqrt(np.mean(np.concatenate(e) ** 2))) for e in (e_old, e_new)]
    return rms[0], rms[1], int(sum(len(e) for e in e_old))
