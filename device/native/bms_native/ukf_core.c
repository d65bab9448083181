/*
 * UKF step for the BMS: a line-by-line port of device/bms/ukf.py and device/bms/model.py.
 * Expressions keep the reference's order of operations so that a double build agrees
 * with CPython to rounding; a float32 build does every operation in single precision
 * (no double promotion: constants go through BMS_C, maths through BMS_EXP/BMS_SQRT).
 */
#include "ukf_core.h"

#include <math.h>

#ifdef BMS_REAL_DOUBLE
#define BMS_EXP(v) exp(v)
#define BMS_SQRT(v) sqrt(v)
#define BMS_LOG(v) log(v)
#else
#define BMS_EXP(v) expf(v)
#define BMS_SQRT(v) sqrtf(v)
#define BMS_LOG(v) logf(v)
#endif

/* A literal in the working precision, rounded once at compile time. */
#define BMS_C(v) ((bms_real)(v))

enum { SOC = 0, V1, V2, TC, TS, BIAS };
enum { N_SOC = 0, N_TEMP, CAP_AS, C_CORE, C_SURF, R_CS, R_SA, R0_SCALE, HEAT_V2, SHIFT,
       SHIFT_GAIN, SHIFT_TAU, SHIFT_E, SHIFT_GAIN_CHG, HEAT_V1, HEAT_RH };
enum { T_OCV = 0, T_R0, T_R0C, T_R1, T_TAU1, T_R2, T_TAU2, T_I0, T_R2C, T_RH };

/* 2R/F of the Butler-Volmer term (model.KIN_B), folded in double at compile time. */
#define KIN_B BMS_C(2.0 * 8.314462618 / 96485.33212)
#define OCV_TOP_SPAN BMS_C(0.1) /* model.OCV_TOP_SPAN */

#define NX BMS_NX
#define NZ BMS_NZ
#define NSIG BMS_NSIG

/* Sigma-point weights for alpha = 1, beta = 0, kappa = 1: all positive, so the
 * predicted covariance stays positive semi-definite in float32. */
#define W0 BMS_C(1.0 / 7.0)
#define WI BMS_C(0.5 / 7.0)
#define GAMMA BMS_C(2.6457513110645907) /* sqrt(NX + kappa), as math.sqrt(7.0) */

/* Physical -> filter units per state (ukf.SCALE). */
static const bms_real SCALE[NX] = {
    BMS_C(100.0), BMS_C(1000.0), BMS_C(1000.0), BMS_C(1.0), BMS_C(1.0), BMS_C(1000.0)
};

/* Everything one step needs, kept on the caller's stack. */
typedef struct {
    bms_real L[NX * NX];     /* Cholesky factor of P */
    bms_real Pn[NX * NX];    /* jittered P, then the new P */
    bms_real X[NSIG * NX];   /* propagated sigma points */
    bms_real Z[NSIG * NZ];   /* predicted measurements per sigma point */
    bms_real xm[NX];
    bms_real xn[NX];
    bms_real pxz[NX * NZ];
    bms_real K[NX * NZ];
    bms_real tab[BMS_NTAB];
} workspace;

/* Grid description read once per step from the params header. */
typedef struct {
    const bms_real *p;
    int ns;
    int nt;
} params;

static int bms_finite(bms_real v) {
    return v == v && BMS_C(-1e30) < v && v < BMS_C(1e30);
}

/* ---- params --------------------------------------------------------------------- */

size_t bms_params_size(size_t n_soc, size_t n_temp) {
    return BMS_HEADER + n_soc + n_temp + BMS_NTAB * n_soc * n_temp;
}

/* A grid count stored as a float: a whole number in [1, max]. */
static int count_ok(bms_real v, int max) {
    return v >= BMS_C(1.0) && v <= (bms_real)max && v == (bms_real)(int)v;
}

static int increasing(const bms_real *g, int n) {
    int k;
    for (k = 0; k + 1 < n; k++) {
        if (!(g[k] < g[k + 1]) || !bms_finite(g[k]) || !bms_finite(g[k + 1])) {
            return 0;
        }
    }
    return n > 1 || bms_finite(g[0]);
}

int bms_params_check(const bms_real *p, size_t n, size_t *expected) {
    int ns, nt, k;
    size_t want;
    if (n < BMS_HEADER) {
        return BMS_PARAMS_SHORT;
    }
    if (!count_ok(p[N_SOC], BMS_MAX_SOC) || !count_ok(p[N_TEMP], BMS_MAX_TEMP)) {
        return BMS_PARAMS_COUNTS;
    }
    ns = (int)p[N_SOC];
    nt = (int)p[N_TEMP];
    want = bms_params_size((size_t)ns, (size_t)nt);
    if (n != want) {
        if (expected != NULL) {
            *expected = want;
        }
        return BMS_PARAMS_LENGTH;
    }
    if (!increasing(p + BMS_HEADER, ns) || !increasing(p + BMS_HEADER + ns, nt)) {
        return BMS_PARAMS_GRID;
    }
    /* Capacity and the thermal constants divide: they must be positive. */
    for (k = CAP_AS; k <= R_SA; k++) {
        if (!(p[k] > BMS_C(0.0)) || !bms_finite(p[k])) {
            return BMS_PARAMS_CONSTS;
        }
    }
    if (!bms_finite(p[R0_SCALE])) {
        return BMS_PARAMS_CONSTS;
    }
    /* The heated fractions of i*v1 and i*v2 lie in [0, 1] (calfile checks the same);
       the ohmic heat's source is a flag, 0 (R0) or 1 (the rh table). */
    if (!(p[HEAT_V2] >= BMS_C(0.0) && p[HEAT_V2] <= BMS_C(1.0))
        || !(p[HEAT_V1] >= BMS_C(0.0) && p[HEAT_V1] <= BMS_C(1.0))
        || !(p[HEAT_RH] == BMS_C(0.0) || p[HEAT_RH] == BMS_C(1.0))) {
        return BMS_PARAMS_CONSTS;
    }
    /* The diffusion shift (the step reads only p[SHIFT]; the rest is the caller's). */
    if (!bms_finite(p[SHIFT]) || !(p[SHIFT_GAIN] >= BMS_C(0.0)) || !bms_finite(p[SHIFT_GAIN])
        || !(p[SHIFT_GAIN_CHG] >= BMS_C(0.0)) || !bms_finite(p[SHIFT_GAIN_CHG])
        || !(p[SHIFT_TAU] > BMS_C(0.0)) || !bms_finite(p[SHIFT_TAU]) || !bms_finite(p[SHIFT_E])) {
        return BMS_PARAMS_CONSTS;
    }
    return BMS_PARAMS_OK;
}

const char *bms_params_reason(int reason) {
    switch (reason) {
    case BMS_PARAMS_OK:
        return "params are valid";
    case BMS_PARAMS_SHORT:
        return "params are shorter than their 16-value header";
    case BMS_PARAMS_COUNTS:
        return "params header n_soc/n_temp must be whole numbers from 1 to 128/32";
    case BMS_PARAMS_LENGTH:
        return "params length does not match n_soc and n_temp in its header";
    case BMS_PARAMS_GRID:
        return "params soc and temperature grids must be finite and strictly increasing";
    case BMS_PARAMS_CONSTS:
        return "params capacity and thermal constants must be positive and finite, heat fractions in [0, 1], the heat's R0/rh flag 0 or 1, the diffusion shift finite with gain >= 0 and tau > 0";
    default:
        return "params are malformed";
    }
}

/* ---- model (model.py) ------------------------------------------------------------ */

/* Index j and weight w so that v ~ grid[j]*(1-w) + grid[j+1]*w, clamped at the ends. */
static int bracket(const bms_real *g, int n, bms_real v, bms_real *w) {
    int j = 0;
    bms_real g0;
    *w = BMS_C(0.0);
    if (n == 1 || v <= g[0]) {
        return 0;
    }
    if (v >= g[n - 1]) {
        *w = BMS_C(1.0);
        return n - 2;
    }
    while (g[j + 1] < v) {   /* stops by j = n - 2 because v < g[n - 1] */
        j++;
    }
    g0 = g[j];
    *w = (v - g0) / (g[j + 1] - g0);
    return j;
}

/* Bilinear lookup of the first ntab tables (1 = the OCV alone) at (soc, temp_c) into tab,
 * clamped at the grid's ends except the OCV past the top: it keeps rising with its mean
 * slope over the top OCV_TOP_SPAN of SOC (model.lookup). */
static void lookup(const params *m, bms_real soc, bms_real temp_c, bms_real *tab, int ntab) {
    const bms_real *p = m->p;
    int ns = m->ns, nt = m->nt;
    bms_real ws, wt, a, b, c, d;
    int i = bracket(p + BMS_HEADER, ns, soc, &ws);
    int j = bracket(p + BMS_HEADER + ns, nt, temp_c, &wt);
    int i1 = ns > 1 ? i + 1 : i;
    int j1 = nt > 1 ? j + 1 : j;
    int r00 = j * ns + i, r01 = j * ns + i1, r10 = j1 * ns + i, r11 = j1 * ns + i1;
    int k;
    const bms_real *t = p + BMS_HEADER + ns + nt;
    a = (BMS_C(1.0) - ws) * (BMS_C(1.0) - wt);
    b = ws * (BMS_C(1.0) - wt);
    c = (BMS_C(1.0) - ws) * wt;
    d = ws * wt;
    for (k = 0; k < ntab; k++, t += ns * nt) {
        tab[k] = a * t[r00] + b * t[r01] + c * t[r10] + d * t[r11];
    }
    if (ns > 1 && soc > p[BMS_HEADER + ns - 1]) {
        bms_real top = p[BMS_HEADER + ns - 1], v_top = tab[0], v_lo;
        bms_real span = top - p[BMS_HEADER] < OCV_TOP_SPAN ? top - p[BMS_HEADER] : OCV_TOP_SPAN;
        lookup(m, top - span, temp_c, &v_lo, 1);
        tab[0] = v_top + (v_top - v_lo) * (soc - top) / span;
    }
}

/* Butler-Volmer overpotential (V) at current i_a, exchange current i0_a (model.kinetic_v):
 * asinh written out (odd-symmetric for accuracy), as in the reference. */
static bms_real kinetic_v(bms_real i_a, bms_real i0_a, bms_real tc) {
    bms_real x = i_a / (BMS_C(2.0) * i0_a);
    bms_real ax = x >= BMS_C(0.0) ? x : -x;
    bms_real eta = BMS_LOG(ax + BMS_SQRT(ax * ax + BMS_C(1.0)));
    return KIN_B * (tc + BMS_C(273.15)) * (x >= BMS_C(0.0) ? eta : -eta);
}

/* Advance one sample (model.step); s = {soc, v1, v2, tc, ts} in physical units. */
static void model_step(const params *m, bms_real *s, bms_real i_a, bms_real ta_c,
                       bms_real dt_s, bms_real *tab) {
    const bms_real *p = m->p;
    bms_real a1, a2, r0, ro, r2, heat_w, g1, g2, kc, ks, a11, a22, b1, b2, det;
    lookup(m, s[0], s[3], tab, BMS_NTAB);
    a1 = BMS_EXP(-dt_s / tab[T_TAU1]);
    a2 = BMS_EXP(-dt_s / tab[T_TAU2]);
    r0 = (i_a >= BMS_C(0.0) ? tab[T_R0] : tab[T_R0C]) * p[R0_SCALE];
    ro = p[HEAT_RH] != BMS_C(0.0) ? tab[T_RH] * p[R0_SCALE] : r0;
    heat_w = i_a * (ro * i_a + p[HEAT_V1] * s[1] + kinetic_v(i_a, tab[T_I0], s[3]))
             + p[HEAT_V2] * i_a * s[2];
    r2 = i_a >= BMS_C(0.0) ? tab[T_R2] : tab[T_R2C];
    s[1] = a1 * s[1] + tab[T_R1] * (BMS_C(1.0) - a1) * i_a;
    s[2] = a2 * s[2] + r2 * (BMS_C(1.0) - a2) * i_a;
    s[0] = s[0] - i_a * dt_s / p[CAP_AS];
    /* Backward Euler on the two thermal nodes: a 2x2 linear solve. */
    g1 = BMS_C(1.0) / p[R_CS];
    g2 = BMS_C(1.0) / p[R_SA];
    kc = p[C_CORE] / dt_s;
    ks = p[C_SURF] / dt_s;
    a11 = kc + g1;
    a22 = ks + g1 + g2;
    b1 = kc * s[3] + heat_w;
    b2 = ks * s[4] + g2 * ta_c;
    det = a11 * a22 - g1 * g1;
    s[3] = (b1 * a22 + g1 * b2) / det;
    s[4] = (a11 * b2 + g1 * b1) / det;
}

/* Terminal voltage (model.voltage) in V: OCV at the diffusion-shifted SOC. */
static bms_real model_voltage(const params *m, const bms_real *s, bms_real i_a,
                              bms_real *tab) {
    bms_real r0, eta;
    bms_real d = m->p[SHIFT];
    lookup(m, s[0], s[3], tab, BMS_NTAB);
    r0 = (i_a >= BMS_C(0.0) ? tab[T_R0] : tab[T_R0C]) * m->p[R0_SCALE];
    eta = kinetic_v(i_a, tab[T_I0], s[3]);
    if (d != BMS_C(0.0)) {
        lookup(m, s[0] - d, s[3], tab, 1); /* OCV at the diffusion-shifted SOC */
    }
    return tab[T_OCV] - s[1] - s[2] - r0 * i_a - eta;
}

/* ---- filter (ukf.py) ------------------------------------------------------------- */

/* Lower Cholesky factor of the n x n row-major a into out; 0 if not positive definite. */
static int cholesky(const bms_real *a, int n, bms_real *out) {
    int i, j, k;
    bms_real s, d;
    for (j = 0; j < n; j++) {
        s = a[j * n + j];
        for (k = 0; k < j; k++) {
            s -= out[j * n + k] * out[j * n + k];
        }
        if (!(s > BMS_C(0.0))) {
            return 0;
        }
        d = BMS_SQRT(s);
        out[j * n + j] = d;
        for (i = j + 1; i < n; i++) {
            s = a[i * n + j];
            for (k = 0; k < j; k++) {
                s -= out[i * n + k] * out[j * n + k];
            }
            out[i * n + j] = s / d;
        }
        for (i = 0; i < j; i++) {
            out[i * n + j] = BMS_C(0.0);
        }
    }
    return 1;
}

/* Factor P, retrying once with diagonal jitter (on a copy: P itself is not touched). */
static int factor(const bms_real *P, workspace *w) {
    int k;
    if (cholesky(P, NX, w->L)) {
        return 1;
    }
    for (k = 0; k < NX * NX; k++) {
        w->Pn[k] = P[k];
    }
    for (k = 0; k < NX; k++) {
        w->Pn[k * NX + k] += BMS_C(1e-6) + BMS_C(1e-4) * w->Pn[k * NX + k];
    }
    return cholesky(w->Pn, NX, w->L);
}

/* Sigma points around x, each propagated through the model, with predicted measurements. */
static void propagate(const params *m, const bms_real *x, const bms_real *u, workspace *w) {
    bms_real s[5];
    bms_real i_a = u[0], ta_c = u[1], dt_s = u[2], i_true, v;
    int sg, k;
    for (sg = 0; sg < NSIG; sg++) {
        bms_real *X = w->X + sg * NX;
        for (k = 0; k < NX; k++) {
            v = x[k];
            if (sg >= 1 && sg <= NX) {
                v += GAMMA * w->L[k * NX + sg - 1];
            } else if (sg > NX) {
                v -= GAMMA * w->L[k * NX + sg - 1 - NX];
            }
            X[k] = v;
        }
        s[0] = X[SOC] / SCALE[SOC];
        s[1] = X[V1] / SCALE[V1];
        s[2] = X[V2] / SCALE[V2];
        s[3] = X[TC];
        s[4] = X[TS];
        i_true = i_a - X[BIAS] / SCALE[BIAS];
        model_step(m, s, i_true, ta_c, dt_s, w->tab);
        X[SOC] = s[0] * SCALE[SOC];
        X[V1] = s[1] * SCALE[V1];
        X[V2] = s[2] * SCALE[V2];
        X[TC] = s[3];
        X[TS] = s[4];
        w->Z[sg * NZ] = model_voltage(m, s, i_true, w->tab) * BMS_C(1000.0);
        w->Z[sg * NZ + 1] = s[4];
    }
}

/* Predicted mean xm and covariance Pn (positive weights only) plus process noise. */
static void predict_moments(const bms_real *cfg, bms_real dt_s, workspace *w) {
    const bms_real *X = w->X;
    bms_real acc, wt;
    int a, b, sg;
    for (a = 0; a < NX; a++) {
        acc = W0 * X[a];
        for (sg = 1; sg < NSIG; sg++) {
            acc += WI * X[sg * NX + a];
        }
        w->xm[a] = acc;
    }
    for (a = 0; a < NX; a++) {
        for (b = 0; b <= a; b++) {
            acc = BMS_C(0.0);
            for (sg = 0; sg < NSIG; sg++) {
                wt = sg == 0 ? W0 : WI;
                acc += wt * (X[sg * NX + a] - w->xm[a]) * (X[sg * NX + b] - w->xm[b]);
            }
            if (a == b) {
                acc += cfg[a] * cfg[a] * dt_s;
            }
            w->Pn[a * NX + b] = acc;
            w->Pn[b * NX + a] = acc;
        }
    }
}

/* Innovation statistics of the voltage (v) and temperature (t) channels. */
typedef struct {
    bms_real zv, zt, svv, svt, stt;
} innov;

static void measurement_moments(workspace *w, innov *in) {
    bms_real wt, dv, dt, dx;
    int sg, k;
    in->zv = W0 * w->Z[0];
    in->zt = W0 * w->Z[1];
    for (sg = 1; sg < NSIG; sg++) {
        in->zv += WI * w->Z[sg * NZ];
        in->zt += WI * w->Z[sg * NZ + 1];
    }
    in->svv = in->svt = in->stt = BMS_C(0.0);
    for (k = 0; k < NX * NZ; k++) {
        w->pxz[k] = BMS_C(0.0);
    }
    for (sg = 0; sg < NSIG; sg++) {
        wt = sg == 0 ? W0 : WI;
        dv = w->Z[sg * NZ] - in->zv;
        dt = w->Z[sg * NZ + 1] - in->zt;
        in->svv += wt * dv * dv;
        in->svt += wt * dv * dt;
        in->stt += wt * dt * dt;
        for (k = 0; k < NX; k++) {
            dx = w->X[sg * NX + k] - w->xm[k];
            w->pxz[k * 2] += wt * dx * dv;
            w->pxz[k * 2 + 1] += wt * dx * dt;
        }
    }
}

/* Pn -= K Pxz^T, symmetrised, with the diagonal floored at 1 % of the process noise. */
static void update_covariance(const bms_real *cfg, workspace *w) {
    bms_real *Pn = w->Pn, *K = w->K, *pxz = w->pxz, v, vs, floor;
    int a, b, k;
    for (a = 0; a < NX; a++) {
        for (b = 0; b <= a; b++) {
            v = Pn[a * NX + b] - (K[a * 2] * pxz[b * 2] + K[a * 2 + 1] * pxz[b * 2 + 1]);
            vs = Pn[b * NX + a] - (K[b * 2] * pxz[a * 2] + K[b * 2 + 1] * pxz[a * 2 + 1]);
            v = BMS_C(0.5) * (v + vs);
            Pn[a * NX + b] = v;
            Pn[b * NX + a] = v;
        }
    }
    for (k = 0; k < NX; k++) {
        floor = cfg[k] * cfg[k] * BMS_C(1e-2);
        if (Pn[k * NX + k] < floor) {
            Pn[k * NX + k] = floor;
        }
    }
}

static int all_finite(const bms_real *v, int n) {
    int k;
    for (k = 0; k < n; k++) {
        if (!bms_finite(v[k])) {
            return 0;
        }
    }
    return 1;
}

static int fail(bms_real *out, int status) {
    out[4] = (bms_real)status;
    return status;
}

int bms_ukf_step(bms_real *x, bms_real *P, const bms_real *p, size_t n_p, bms_real *cfg,
                 const bms_real *u, bms_real *out) {
    workspace w;
    params m;
    innov in;
    bms_real v_meas = u[3], ts_meas = u[4];
    bms_real rv, rt, ev, et, sv, gate, s11, s22, det, i11, i22, i12, k1, k2, rv_new = cfg[10];
    int use_v, use_t, k;

    if (bms_params_check(p, n_p, NULL) != BMS_PARAMS_OK) {
        return fail(out, BMS_ERR_PARAMS);
    }
    /* Inputs the model divides by or integrates: refuse rather than spread NaN. */
    if (!bms_finite(u[0]) || !bms_finite(u[1]) || !bms_finite(u[2]) || !(u[2] > BMS_C(0.0))) {
        return fail(out, BMS_ERR_NONFINITE);
    }
    m.p = p;
    m.ns = (int)p[N_SOC];
    m.nt = (int)p[N_TEMP];

    if (!factor(P, &w)) {
        return fail(out, BMS_ERR_NOT_PD);
    }
    propagate(&m, x, u, &w);
    predict_moments(cfg, u[2], &w);
    measurement_moments(&w, &in);

    rv = cfg[10];
    rt = cfg[7] * cfg[7];
    use_v = bms_finite(v_meas);
    use_t = bms_finite(ts_meas);
    ev = use_v ? v_meas * BMS_C(1000.0) - in.zv : BMS_C(0.0);
    et = use_t ? ts_meas - in.zt : BMS_C(0.0);
    /* Gate: a voltage innovation far outside the predicted spread is clipped, so one
     * glitch cannot yank the SOC. (sv <= 0 fails the determinant test below.) */
    sv = in.svv + rv;
    gate = sv > BMS_C(0.0) ? cfg[11] * BMS_SQRT(sv) : BMS_C(0.0);
    if (ev > gate) {
        ev = gate;
    } else if (ev < -gate) {
        ev = -gate;
    }
    if (!use_v) {
        in.svt = BMS_C(0.0);
        for (k = 0; k < NX; k++) {
            w.pxz[k * 2] = BMS_C(0.0);
        }
        s11 = BMS_C(1.0);
    } else {
        s11 = in.svv + rv;
    }
    if (!use_t) {
        in.svt = BMS_C(0.0);
        for (k = 0; k < NX; k++) {
            w.pxz[k * 2 + 1] = BMS_C(0.0);
        }
        s22 = BMS_C(1.0);
    } else {
        s22 = in.stt + rt;
    }
    det = s11 * s22 - in.svt * in.svt;
    if (!(det > BMS_C(0.0))) {
        return fail(out, BMS_ERR_NOT_PD);
    }
    i11 = s22 / det;
    i22 = s11 / det;
    i12 = -in.svt / det;

    /* K = Pxz S^-1 ; x += K e ; P -= K S K^T = K Pxz^T */
    for (k = 0; k < NX; k++) {
        k1 = w.pxz[k * 2] * i11 + w.pxz[k * 2 + 1] * i12;
        k2 = w.pxz[k * 2] * i12 + w.pxz[k * 2 + 1] * i22;
        w.xn[k] = w.xm[k] + k1 * ev + k2 * et;
        w.K[k * 2] = k1;
        w.K[k * 2 + 1] = k2;
    }
    update_covariance(cfg, &w);

    /* Adaptive voltage noise: covariance matching on the innovation, bounded. */
    if (use_v && cfg[9] > BMS_C(0.0)) {
        bms_real target = ev * ev - in.svv;
        bms_real lo = cfg[6] * cfg[6];
        bms_real hi = cfg[8] * cfg[8];
        rv = rv + cfg[9] * (target - rv);
        rv_new = rv < lo ? lo : (rv > hi ? hi : rv);
    }
    /* SOC stays in a physical window. */
    if (w.xn[SOC] < BMS_C(-5.0)) {
        w.xn[SOC] = BMS_C(-5.0);
    } else if (w.xn[SOC] > BMS_C(105.0)) {
        w.xn[SOC] = BMS_C(105.0);
    }
    if (!all_finite(w.xn, NX) || !all_finite(w.Pn, NX * NX) || !bms_finite(rv_new)) {
        return fail(out, BMS_ERR_NONFINITE);
    }
    /* Commit: only a fully finite step reaches the caller's state. */
    for (k = 0; k < NX; k++) {
        x[k] = w.xn[k];
    }
    for (k = 0; k < NX * NX; k++) {
        P[k] = w.Pn[k];
    }
    cfg[10] = rv_new;
    out[0] = in.zv / BMS_C(1000.0);
    out[1] = in.zt;
    out[2] = use_v ? v_meas * BMS_C(1000.0) - in.zv : BMS_C(0.0);
    out[3] = ev * (i11 * ev + i12 * et) + et * (i12 * ev + i22 * et);
    out[4] = (bms_real)BMS_OK;
    return BMS_OK;
}
