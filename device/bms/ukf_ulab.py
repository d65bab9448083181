# UKF step vectorised over the 13 sigma points with ulab (numpy stands in under CPython).
# It follows bms.ukf (the reference) step for step: same scaled state, weights, gating,
# adaptive voltage noise, diagonal floor, jitter retry, SOC clamp and status codes.
#
# Restricted to ulab's numpy subset: no `@`, no out=, no fancy or boolean-mask indexing,
# no linalg.solve; only dense slices, views (reshape/transpose) and broadcasting.
#
# Layout: the 13 sigma points are the columns of one 8 x 13 buffer (rows 0-5 the state,
# row 6 predicted voltage mV, row 7 predicted surface temperature), so one np.dot gives
# all means and one more gives Pxx, Pxz and Pzz together.
#
# Bilinear lookup without fancy indexing: the hat function w_i(s) (= interp(s, grid, e_i))
# is the weight of grid node i, clamped at the ends exactly like model._bracket (the
# OCV's rise past the top of the SOC grid is added after). The
# products of the soc and temperature weights for all sigma points form a
# (n_temp*n_soc) x 13 matrix, and one np.dot with the 7 flat tables gives every value.
import math

from bms import model, ukf
from bms.compat import ULAB as _ULAB
from bms.compat import np

if np is None:
    raise ImportError("the ulab filter backend needs ulab (in the firmware) or numpy "
                      "(on a PC); use the python backend instead")

NX = ukf.NX
NSIG = ukf.NSIG
NROW = NX + ukf.NZ
_VROW = NX
_TROW = NX + 1
_NN = NX * NX  # P[0:_NN:NX + 1] is the diagonal of a flat row-major NX x NX matrix
# (written out at each use: MicroPython cannot make slice objects with slice())


def _finite(v):
    return v == v and -1e30 < v < 1e30


def _status(out, st):
    out[ukf.OUT_STATUS] = st
    return st


def _kinetic_v(i, i0, tc):
    # model.kinetic_v for arrays: asinh as log(|x| + sqrt(x^2 + 1)), odd-symmetric, the
    # same formula as the reference (not every ulab build has asinh).
    x = i / (2.0 * i0)
    ax = abs(x)
    eta = np.log(ax + np.sqrt(ax * ax + 1.0))
    return model.KIN_B * (tc + 273.15) * np.where(x >= 0.0, eta, -eta)


class Backend:
    name = "ulab"

    def __init__(self, float64=False):
        # Device: ulab's float (float32 on rp2/esp32). CPython: float32 to mimic the
        # board, or float64 (float64=True) to cross-check against the reference.
        if _ULAB:
            self.dtype = np.float
        else:
            self.dtype = np.float64 if float64 else np.float32
        dt = self.dtype
        self.XZ = np.zeros((NROW, NSIG), dtype=dt)
        self.wcol = np.zeros((NSIG, 1), dtype=dt)
        self.wrow = np.zeros(NSIG, dtype=dt)
        w0, wi, self.gamma = ukf.weights()
        for s in range(NSIG):
            w = w0 if s == 0 else wi
            self.wcol[s, 0] = w
            self.wrow[s] = w
        self.KT = np.zeros((ukf.NZ, NX), dtype=dt)
        self.ns = 0
        self.nt = 0

    def alloc(self, values):
        return np.array([float(v) for v in values], dtype=self.dtype)

    # -- lookup -------------------------------------------------------------------
    def _shape(self, ns, nt):
        # Buffers that depend on the calibration's grid size: made again only if it changes.
        dt = self.dtype
        self.ns = ns
        self.nt = nt
        self.ramp_s = np.zeros(ns, dtype=dt)     # node numbers 0..n-1, as xp values
        self.node_s = np.zeros((ns, 1), dtype=dt)  # the same as a column
        self.ramp_t = np.zeros(nt, dtype=dt)
        self.node_t = np.zeros((nt, 1), dtype=dt)
        for i in range(ns):
            self.ramp_s[i] = i
            self.node_s[i, 0] = i
        for j in range(nt):
            self.ramp_t[j] = j
            self.node_t[j, 0] = j
        self.W2 = np.zeros((nt * ns, NSIG), dtype=dt)

    def _hat(self, v, p, start, n, ramp, node):
        # Weights of the n grid nodes at each value of v (n x NSIG): interp gives the
        # fractional node position f (clamped at the ends like model._bracket), and node
        # i weighs max(0, 1 - |f - i|). One interp call instead of one per node.
        if n == 1:  # ulab's interp needs two grid points; one point has weight 1
            return np.ones((1, NSIG), dtype=self.dtype)
        f = np.interp(v, p[start:start + n], ramp)
        return np.maximum(1.0 - abs(f - node), 0.0)

    def lookup(self, p, soc, temp_c, ntab=model.NTAB):
        """The first ntab tables (all by default; 1 = the OCV alone) at the sigma points
        (soc, temp_c: 1-D arrays of equal length NSIG): an ntab x NSIG array, row k =
        table k (model.TABLES order)."""
        ns = int(p[model.N_SOC])
        nt = int(p[model.N_TEMP])
        if ns != self.ns or nt != self.nt:
            self._shape(ns, nt)
        h = model.HEADER
        Ws = self._hat(soc, p, h, ns, self.ramp_s, self.node_s)
        Wt = self._hat(temp_c, p, h + ns, nt, self.ramp_t, self.node_t)
        # Bilinear weight of node (j, i) = Wt[j] * Ws[i], in the tables' flat order.
        W2 = self.W2
        for j in range(nt):
            W2[j * ns:(j + 1) * ns] = Ws * Wt[j]
        base = h + ns + nt
        tabm = p[base:base + ntab * nt * ns].reshape((ntab, nt * ns))
        out = np.dot(tabm, W2)
        if ns > 1 and np.max(soc) > p[h + ns - 1]:
            out[0] = out[0] + self._ocv_above_top(p, soc, Wt, ns, nt)
        return out

    def _ocv_above_top(self, p, soc, Wt, ns, nt):
        # model.lookup: past the top of the SOC grid the OCV keeps rising with its mean
        # slope over the top OCV_TOP_SPAN (the hat weights above hold the top value). The
        # slope of each temperature row, at each sigma point's temperature, times how
        # far past the top it is.
        h = model.HEADER
        top = p[h + ns - 1]
        span = min(model.OCV_TOP_SPAN, top - p[h])
        k, w = model._bracket(p, h, ns, top - span)
        ocv = p[h + ns + nt:h + ns + nt + nt * ns].reshape((nt, ns))
        slope = (ocv[:, ns - 1] - ocv[:, k] * (1.0 - w) - ocv[:, k + 1] * w) / span
        return np.dot(slope.reshape((1, nt)), Wt)[0] * np.maximum(soc - top, 0.0)

    # -- filter step --------------------------------------------------------------
    def _chol(self, Pm):
        # ulab's cholesky rejects asymmetry above ~1e-7 (absolute): symmetrise first.
        try:
            L = np.linalg.cholesky((Pm + Pm.transpose()) * 0.5)
        except (ValueError, ArithmeticError):
            return None
        # ulab lets a NaN pivot through (it only tests sum <= 0).
        s = np.sum(L)
        return L if _finite(s) else None

    def _factor(self, P, Pm):
        # ukf.factor: Cholesky, retried once with diagonal jitter (added to P).
        L = self._chol(Pm)
        if L is None:
            n = NX
            for k in range(n):
                P[k * n + k] += 1e-6 + 1e-4 * P[k * n + k]
            L = self._chol(Pm)
        return L

    def _sigma_points(self, x, L):
        # Column 0 the mean, columns 1..n mean + gamma*L[:, s-1], then minus.
        n = NX
        XZ = self.XZ
        xc = x.reshape((n, 1))
        gL = L * self.gamma
        XZ[0:n, 0:1] = xc
        XZ[0:n, 1:n + 1] = xc + gL
        XZ[0:n, n + 1:2 * n + 1] = xc - gL

    def _moments(self, P, Pm, cfg, dt_s):
        # Means and the joint covariance of state and measurement (weights all positive),
        # process noise added to P. Returns (mean column, joint covariance).
        XZ = self.XZ
        n = NX
        m = np.dot(XZ, self.wcol)
        D = XZ - m
        C = np.dot(D * self.wrow, D.transpose())
        Pm[:, :] = C[0:n, 0:n]
        q = cfg[ukf.CFG_Q:ukf.CFG_Q + n]
        P[0:_NN:NX + 1] = P[0:_NN:NX + 1] + q * q * dt_s
        return m, C

    def _update(self, x, P, Pm, cfg, m, C, v_meas, ts_meas, out):
        # ukf.update and ukf.update_covariance: innovation, gate, gain, state, covariance
        # (symmetrised, diagonal floored). Returns the gated voltage innovation (mV), or
        # None when the innovation covariance is not positive definite.
        n = NX
        zv = m[_VROW, 0]
        zt = m[_TROW, 0]
        svv = C[_VROW, _VROW]
        svt = C[_VROW, _TROW]
        stt = C[_TROW, _TROW]
        out[ukf.OUT_V] = zv / 1000.0
        out[ukf.OUT_TS] = zt
        rv = cfg[ukf.CFG_RV]
        rt = cfg[ukf.CFG_T_NOISE] * cfg[ukf.CFG_T_NOISE]
        use_v = _finite(v_meas)
        use_t = _finite(ts_meas)
        ev = (v_meas * 1000.0 - zv) if use_v else 0.0
        et = (ts_meas - zt) if use_t else 0.0
        out[ukf.OUT_INNOV] = ev
        # Gate: clip a voltage innovation far outside the predicted spread.
        gate = cfg[ukf.CFG_GATE] * math.sqrt(svv + rv)
        if ev > gate:
            ev = gate
        elif ev < -gate:
            ev = -gate
        if not use_v:
            svt = 0.0
        s11 = svv + rv if use_v else 1.0
        if not use_t:
            svt = 0.0
        s22 = stt + rt if use_t else 1.0
        det = s11 * s22 - svt * svt
        if not det > 0.0:
            return None
        i11 = s22 / det
        i22 = s11 / det
        i12 = -svt / det
        out[ukf.OUT_NIS] = ev * (i11 * ev + i12 * et) + et * (i12 * ev + i22 * et)
        # K = Pxz S^-1 (rows of KT: the gain for voltage, for temperature); a missing
        # measurement contributes a zero column, as in the reference.
        pz = C[_VROW:_TROW + 1, 0:n]
        KT = self.KT
        a = i11 if use_v else 0.0
        d = i22 if use_t else 0.0
        b = i12 if (use_v and use_t) else 0.0
        KT[0] = pz[0] * a + pz[1] * b
        KT[1] = pz[0] * b + pz[1] * d
        x[:] = m[0:n, 0] + KT[0] * ev + KT[1] * et
        M = Pm - np.dot(KT.transpose(), pz)
        Pm[:, :] = (M + M.transpose()) * 0.5
        q = cfg[ukf.CFG_Q:ukf.CFG_Q + n]
        P[0:_NN:NX + 1] = np.maximum(P[0:_NN:NX + 1], q * q * 1e-2)
        return ev

    def _finish(self, x, P):
        # ukf.finish: the SOC window, then x and P finite.
        n = NX
        if x[ukf.SOC] < -5.0:
            x[ukf.SOC] = -5.0
        elif x[ukf.SOC] > 105.0:
            x[ukf.SOC] = 105.0
        for k in range(n):
            if not _finite(x[k]):
                return ukf.ERR_NONFINITE
        # NaN/inf anywhere makes the sum non-finite; the max bounds each entry.
        aP = abs(P)
        s = np.sum(aP)
        if not (s == s and s < 1e38 and np.max(aP) < 1e30):
            return ukf.ERR_NONFINITE
        return ukf.OK

    def step(self, x, P, p, cfg, u, out):
        """ukf.step, stage by stage."""
        if not ukf.inputs_ok(u):
            return _status(out, ukf.ERR_NONFINITE)
        Pm = P.reshape((NX, NX))
        L = self._factor(P, Pm)
        if L is None:
            return _status(out, ukf.ERR_NOT_PD)
        self._sigma_points(x, L)
        self._propagate(p, u)
        m, C = self._moments(P, Pm, cfg, u[ukf.U_DT])
        ev = self._update(x, P, Pm, cfg, m, C, u[ukf.U_V], u[ukf.U_TS], out)
        if ev is None:
            return _status(out, ukf.ERR_NOT_PD)
        if _finite(u[ukf.U_V]):
            ukf.adapt_noise(cfg, ev, C[_VROW, _VROW])
        return _status(out, self._finish(x, P))

    def _propagate(self, p, u):
        """Model step and measurement prediction for all sigma points in XZ, in place."""
        XZ = self.XZ
        sc = ukf.SCALE
        i_a = u[ukf.U_I]
        ta_c = u[ukf.U_TA]
        dt_s = u[ukf.U_DT]
        soc = XZ[ukf.SOC] / sc[ukf.SOC]
        v1 = XZ[ukf.V1] / sc[ukf.V1]
        v2 = XZ[ukf.V2] / sc[ukf.V2]
        tc = XZ[ukf.TC]
        ts = XZ[ukf.TS]
        i = i_a - XZ[ukf.BIAS] / sc[ukf.BIAS]
        dis = i >= 0.0
        r0s = u[ukf.U_R0]
        tab = self.lookup(p, soc, tc)
        a1 = np.exp(-dt_s / tab[model.TAU1])
        a2 = np.exp(-dt_s / tab[model.TAU2])
        r0 = np.where(dis, tab[model.R0], tab[model.R0C]) * r0s
        ro = tab[model.RH] * r0s if p[model.HEAT_RH] != 0.0 else r0
        heat_w = i * (ro * i + p[model.HEAT_V1] * v1 + _kinetic_v(i, tab[model.I0], tc)) \
            + p[model.HEAT_V2] * i * v2
        r2 = np.where(dis, tab[model.R2], tab[model.R2C])
        v1 = a1 * v1 + tab[model.R1] * (1.0 - a1) * i
        v2 = a2 * v2 + r2 * (1.0 - a2) * i
        soc = soc - i * dt_s / u[ukf.U_CAP]
        # Backward Euler on the two thermal nodes (scalars shared by all sigma points).
        g1 = 1.0 / p[model.R_CS]
        g2 = 1.0 / p[model.R_SA]
        kc = p[model.C_CORE] / dt_s
        ks = p[model.C_SURF] / dt_s
        a11 = kc + g1
        a22 = ks + g1 + g2
        b1 = kc * tc + heat_w
        b2 = ks * ts + g2 * ta_c
        det = a11 * a22 - g1 * g1
        tc = (b1 * a22 + b2 * g1) / det
        ts = (b1 * g1 + b2 * a11) / det
        XZ[ukf.SOC] = soc * sc[ukf.SOC]
        XZ[ukf.V1] = v1 * sc[ukf.V1]
        XZ[ukf.V2] = v2 * sc[ukf.V2]
        XZ[ukf.TC] = tc
        XZ[ukf.TS] = ts
        tab = self.lookup(p, soc, tc)
        r0 = np.where(dis, tab[model.R0], tab[model.R0C]) * r0s
        d = u[ukf.U_SHIFT]
        # OCV at the diffusion-shifted SOC (model.voltage)
        u = tab[model.OCV] if d == 0.0 else self.lookup(p, soc - d, tc, 1)[0]
        XZ[_VROW] = (u - v1 - v2 - r0 * i - _kinetic_v(i, tab[model.I0], tc)) * 1000.0
        XZ[_TROW] = ts
