/*
 * State of power (device/bms/sop.py) in C. For each horizon T and direction (sign +1
 * discharge, -1 charge) the reference:
 *   1. linearises the model over T at the present state: a closed-form current that puts
 *      the predicted terminal voltage on its limit,
 *   2. corrects it once with the full model at that current,
 *   3. caps it by the SOC window, the core temperature limit and the rated current.
 * Here the same steps use the same formulas, with what they share computed once per call:
 *   - one 10-table lookup at (soc, T_core): every model step in sop.py starts from the
 *     present state, so its lookup is that one;
 *   - the OCV slope (two OCV lookups) and the temperature bracket of T_core;
 *   - the diffusion factor exp(E (1/T - 1/298.15)) and, per horizon, exp(-T/tau1),
 *     exp(-T/tau2), the shift's decay, the thermal solve's matrix and the core temperature
 *     at zero current (the same for both directions);
 *   - the thermal prediction at a current needs only the heat (the core temperature after
 *     a backward-Euler step is linear in it), not the voltage;
 *   - after a step, only the tables the voltage reads (R0 or R0c, i0, the OCV);
 *   - exp(-T/tau) for a horizon that is a whole multiple of the one before (2, 10, 30 s)
 *     as a power of the previous one: one exp per time constant instead of one per horizon;
 *   - grid brackets start from the present state's (predicted states are next to it);
 *   - the thermal cap is skipped when an upper bound of the rise (asinh(x) <= x in the
 *     kinetic heat) already leaves room: then the reference does not scale either;
 *   - divisions by the horizon, capacity, thermal determinant and r_eff become one
 *     reciprocal each (results differ from the reference by rounding only).
 * Otherwise expressions keep the reference's order of operations. The hot paths' add,
 * subtract and multiply are bms_float.h's f_add, f_sub, f_mul (f_madd: acc + a * b),
 * its exp, log and square root BMS_EXP, BMS_LOG, BMS_SQRT: the plain C operators and
 * libm, except in the RP2040 firmware, where they call the boot ROM directly (the same
 * add, subtract and multiply results for finite operands; the ROM's exp and log differ
 * from libm's in the last bit at times, ~1e-6 A here).
 */
#include "sop_core.h"

#include "bms_float.h"

#define R(v) ((bms_real)(v))

/* params header and tables (model.py) */
enum { N_SOC = 0, N_TEMP, CAP_AS, C_CORE, C_SURF, R_CS, R_SA, HEAT_V2, SHIFT_GAIN, SHIFT_TAU,
       SHIFT_E, SHIFT_GAIN_CHG, HEAT_V1, HEAT_RH };
enum { T_OCV = 0, T_R0, T_R0C, T_R1, T_TAU1, T_R2, T_TAU2, T_I0, T_R2C, T_RH };

#define KIN_B R(2.0 * 8.314462618 / 96485.33212) /* model.KIN_B */
#define OCV_TOP_SPAN R(0.1)                      /* model.OCV_TOP_SPAN */
#define SLOPE_DS R(0.01)                         /* sop.py: the OCV slope's half step */
#define DIFF_TC_MIN (-100.0)                     /* model.DIFF_TC_MIN */

typedef struct {
    const bms_real *p;
    const bms_real *sg;   /* soc grid */
    const bms_real *tg;   /* temperature grid */
    const bms_real *t;    /* first table */
    int ns, nt, nn;       /* nn = ns * nt, one table */
} grid;

/* One grid coordinate: index j and weight w (x ~ g[j] (1-w) + g[j+1] w). */
typedef struct {
    int j, j1;
    bms_real w;
} brk;

/* Bilinear corner offsets and weights for one (soc, temp) point. */
typedef struct {
    int r00, r01, r10, r11;
    bms_real a, b, c, d;
} wts;

/* Not NaN, not infinite (on the bits: no float compare). */
BMS_BITS_FN int finite_real(bms_real v) {
    return mag_bits(v) < INF_BITS;
}

/* Ordered comparisons in the hot paths. On a core without an FPU (ARMv6-M: the RP2040)
 * each float compare is a library call of a few dozen cycles; the bits of a float32,
 * mapped to a signed integer that orders as the floats do (-0 = +0), compare in a few
 * instructions. A NaN orders arbitrarily there, but a NaN also makes the result
 * non-finite, which bms_sop turns into no current and an error status. */
#if !defined(BMS_REAL_DOUBLE) && defined(__ARM_ARCH_6M__)
#define LT(a, b) (order_key(a) < order_key(b))
#define LE(a, b) (order_key(a) <= order_key(b))
#define POS(a) (order_key(a) > 0)          /* a > 0 */
#define NONNEG(a) (order_key(a) >= 0)      /* a >= 0 */
#else
#define LT(a, b) ((a) < (b))
#define LE(a, b) ((a) <= (b))
#define POS(a) ((a) > R(0.0))
#define NONNEG(a) ((a) >= R(0.0))
#endif

/* model._bracket, clamped at the ends: the j with g[j] < v <= g[j+1] (a unique one, the
 * grid increases strictly). Predicted states lie next to the present one: first try its
 * interval hint (inv: 1 / its width, or 0), then walk from it, or bisect (hint < 0). */
static void bracket(const bms_real *g, int n, bms_real v, int hint, bms_real inv, brk *o) {
    int j;
    bms_real g0;
    if (hint >= 0 && n > 1 && LT(g[hint], v) && LE(v, g[hint + 1])) {
        j = hint;
    } else {
        o->w = R(0.0);
        o->j = 0;
        o->j1 = n > 1 ? 1 : 0;
        if (n == 1 || LE(v, g[0])) {
            return;
        }
        if (LE(g[n - 1], v)) {
            o->w = R(1.0);
            o->j = n - 2;
            o->j1 = n - 1;
            return;
        }
        inv = R(0.0);
        if (hint < 0) {
            int hi = n - 1, mid;
            j = 0;
            while (hi - j > 1) {
                mid = (j + hi) / 2;
                if (LT(g[mid], v)) {
                    j = mid;
                } else {
                    hi = mid;
                }
            }
        } else {
            j = hint < n - 2 ? hint : n - 2;
            while (j > 0 && !LT(g[j], v)) {
                j--;
            }
            while (LT(g[j + 1], v)) {   /* stops by j = n - 2 because v < g[n - 1] */
                j++;
            }
        }
    }
    g0 = g[j];
    o->w = mag_bits(inv) != 0 ? f_mul(f_sub(v, g0), inv)            /* inv != 0 */
                              : f_sub(v, g0) / f_sub(g[j + 1], g0);
    o->j = j;
    o->j1 = j + 1;
}

static void weights(const grid *m, const brk *s, const brk *t, wts *o) {
    bms_real ws = s->w, wt = t->w, ws1 = f_sub(R(1.0), ws), wt1 = f_sub(R(1.0), wt);
    o->r00 = t->j * m->ns + s->j;
    o->r01 = t->j * m->ns + s->j1;
    o->r10 = t->j1 * m->ns + s->j;
    o->r11 = t->j1 * m->ns + s->j1;
    o->a = f_mul(ws1, wt1);
    o->b = f_mul(ws, wt1);
    o->c = f_mul(ws1, wt);
    o->d = f_mul(ws, wt);
}

static bms_real interp(const grid *m, int k, const wts *o) {
    const bms_real *t = m->t + k * m->nn;
    /* a t00 + b t01 + c t10 + d t11, summed left to right */
    return f_madd(f_madd(f_madd(f_mul(o->a, t[o->r00]), o->b, t[o->r01]), o->c, t[o->r10]),
                  o->d, t[o->r11]);
}

/* The OCV past the grid's top: v (the clamped value at soc) continued with the mean slope
 * of the top OCV_TOP_SPAN of the grid (model.lookup). */
static bms_real ocv_extend(const grid *m, bms_real soc, const brk *tb, bms_real v) {
    if (m->ns > 1 && LT(m->sg[m->ns - 1], soc)) {
        bms_real top = m->sg[m->ns - 1], v_lo;
        bms_real span = f_sub(top, m->sg[0]);
        span = LT(span, OCV_TOP_SPAN) ? span : OCV_TOP_SPAN;
        brk b2;
        wts w;
        bracket(m->sg, m->ns, f_sub(top, span), -1, R(0.0), &b2);
        weights(m, &b2, tb, &w);
        v_lo = interp(m, T_OCV, &w);
        v = f_add(v, f_mul(f_sub(v, v_lo), f_sub(soc, top)) / span);
    }
    return v;
}

/* OCV at soc for the temperature bracket tb (model.lookup with ntab = 1); the soc bracket
 * search starts at the interval hint (inv: 1 / its width, or 0). */
static bms_real ocv_at(const grid *m, bms_real soc, const brk *tb, int hint, bms_real inv) {
    brk sb;
    const bms_real *r0, *r1;
    bms_real v0, v1;
    bracket(m->sg, m->ns, soc, hint, inv, &sb);
    /* one table: interpolate along soc on the two temperature rows, then between them
       (the bilinear value, with fewer multiplies than the weights of interp) */
    r0 = m->t + T_OCV * m->nn + tb->j * m->ns;
    r1 = m->t + T_OCV * m->nn + tb->j1 * m->ns;
    v0 = f_madd(r0[sb.j], sb.w, f_sub(r0[sb.j1], r0[sb.j]));
    v1 = f_madd(r1[sb.j], sb.w, f_sub(r1[sb.j1], r1[sb.j]));
    return ocv_extend(m, soc, tb, f_madd(v0, tb->w, f_sub(v1, v0)));
}

/* model.kinetic_v at x = i_a / (2 i0), kbt = KIN_B (tc + 273.15). For |x| < 1e-3 the series
 * x - x^3/6 is asinh to float precision (the logarithm of 1 + x loses digits there), and
 * calibrations without i0 (1e6 A) land in it: no logarithm, no square root. */
static bms_real kinetic_x(bms_real x, bms_real kbt) {
    int neg = !NONNEG(x);
    bms_real ax = neg ? negated(x) : x;
    bms_real eta;
    if (LT(ax, R(1e-3))) {
        eta = f_sub(ax, f_mul(f_mul(ax, ax), ax) / R(6.0));
    } else {
        eta = BMS_LOG(f_add(ax, BMS_SQRT(f_add(f_mul(ax, ax), R(1.0)))));
    }
    return f_mul(kbt, neg ? negated(eta) : eta);
}

/* What one horizon shares between the directions. */
typedef struct {
    bms_real T;
    bms_real t_cap, cap_t;  /* T / capacity, capacity / T */
    bms_real a1, a2;        /* exp(-T/tau1), exp(-T/tau2) at the present state */
    bms_real rr1;           /* R1 (1 - a1) */
    bms_real as;            /* the diffusion shift's decay over T */
    bms_real asd;           /* as * d */
    bms_real d0;            /* the shift after T at zero current */
    bms_real ocv0;          /* OCV at soc - d0 */
    bms_real rc0;           /* v1 a1 + v2 a2: the RC voltages after T at zero current */
    bms_real a22_det;       /* core temperature rise per watt of heat over T */
    bms_real tc0;           /* core temperature after T at zero current */
} horizon;

/* Everything one call shares. */
typedef struct {
    grid m;
    bms_real soc, v1, v2, tc, ts;
    brk sb, tb;             /* soc and temperature brackets at the present state */
    bms_real inv_ds, inv_dt; /* 1 / their widths (0: a one-point grid) */
    bms_real tab[BMS_NTAB]; /* all tables at (soc, tc) */
    bms_real inv_2i0;       /* 1 / (2 i0) at (soc, tc) */
    bms_real kbt;           /* KIN_B (tc + 273.15) */
    bms_real kin_ub;        /* kbt / (2 i0): the kinetic heat's bound per A^2 */
    bms_real k1v1, k2v2, kv; /* heated fractions of the RC voltages, their sum */
    bms_real slope;         /* dOCV/dSOC around soc */
    bms_real f;             /* diffusion's temperature factor */
    bms_real d;             /* the cell's diffusion shift (lim[BMS_SOP_SHIFT]) */
    bms_real r0s;           /* the cell's R0 factor (lim[BMS_SOP_R0]) */
} shared;

/* What one direction shares between the horizons: the model's choices by the sign of the
 * current (R0/R0c, R2/R2c, the shift's gain), made once. */
typedef struct {
    int chg;                /* 1: charge (current < 0) */
    bms_real r0, r2, ro;    /* R0 or R0c (scaled), R2 or R2c, the ohmic heat's resistance */
    bms_real ro_k;          /* ro + kin_ub: the heat's bound per A^2 */
    bms_real gf;            /* shift gain times the temperature factor */
    int shift;              /* 0: gain and shift both 0, the shift stays 0 */
} direction;

/* The heat (W) of model.step at current i_a (direction dr) from the present state:
 * i (ro i + k1 v1 + eta(i)) + k2 i v2, the two RC terms summed once. */
static bms_real heat_w(const shared *s, const direction *dr, bms_real i_a) {
    return f_mul(i_a, f_add(f_add(f_mul(dr->ro, i_a), s->kv),
                            kinetic_x(f_mul(i_a, s->inv_2i0), s->kbt)));
}

/* sop._predict's voltage: model.step over h at i_a, then model.voltage with the shift
 * advanced at i_a. rr12 = R1 (1 - a1) + R2 (1 - a2), g_h: the shift's growth per A. */
static bms_real predict_v(const shared *s, const horizon *h, const direction *dr,
                          bms_real i_a, bms_real rr12, bms_real g_h) {
    bms_real rc, soc, tc, r0, eta, ocv;
    brk sb, tb;
    wts w;
    rc = f_madd(h->rc0, rr12, i_a);                    /* v1 + v2 after the step */
    soc = f_sub(s->soc, f_mul(i_a, h->t_cap));
    tc = f_madd(h->tc0, heat_w(s, dr, i_a), h->a22_det);   /* linear in the heat */
    /* model.voltage at the new state: R0 or R0c, i0 and the OCV at soc - shift */
    bracket(s->m.tg, s->m.nt, tc, s->tb.j, s->inv_dt, &tb);
    bracket(s->m.sg, s->m.ns, soc, s->sb.j, s->inv_ds, &sb);
    weights(&s->m, &sb, &tb, &w);
    r0 = f_mul(interp(&s->m, dr->chg ? T_R0C : T_R0, &w), s->r0s);
    eta = kinetic_x(i_a / f_mul(R(2.0), interp(&s->m, T_I0, &w)),
                    f_mul(KIN_B, f_add(tc, R(273.15))));
    if (!dr->shift) {
        ocv = ocv_extend(&s->m, soc, &tb, interp(&s->m, T_OCV, &w));
    } else {
        /* model.shift_ahead at i_a: as d + (1 - as) g f i_a */
        ocv = ocv_at(&s->m, f_sub(soc, f_madd(h->asd, g_h, i_a)), &tb, sb.j,
                     sb.j == s->sb.j ? s->inv_ds : R(0.0));
    }
    return f_sub(f_sub(f_sub(ocv, rc), f_mul(r0, i_a)), eta);
}

/* sop._limit: the largest current magnitude in direction dr. Here every quantity that
 * the reference multiplies by sign (+1 discharge, -1 charge) is negated on charge. */
static bms_real limit(const shared *s, const horizon *h, const direction *dr,
                      bms_real v_lim, bms_real soc_lim, bms_real i_rated,
                      bms_real t_core_max) {
    bms_real rr12, g_h, r_eff, inv_r, i, ia, v, err, i_soc;
    rr12 = f_madd(h->rr1, dr->r2, f_sub(R(1.0), h->a2));
    /* sign * (shift_ahead(sign) - d0) = (1 - as) g f */
    g_h = dr->shift ? f_mul(f_sub(R(1.0), h->as), dr->gf) : R(0.0);
    r_eff = f_madd(f_add(dr->r0, rr12), s->slope, f_add(h->t_cap, g_h));
    if (!POS(r_eff)) {
        return R(0.0);
    }
    /* the SOC window caps i at i_soc: none left, no current (as the reference ends) */
    i_soc = f_mul(f_sub(s->soc, soc_lim), h->cap_t);
    i_soc = dr->chg ? negated(i_soc) : i_soc;
    if (!POS(i_soc)) {
        return R(0.0);
    }
    inv_r = R(1.0) / r_eff;
    i = f_mul(f_sub(f_sub(h->ocv0, h->rc0), v_lim), inv_r);
    i = dr->chg ? negated(i) : i;
    if (!POS(i)) {
        return R(0.0);
    }
    i = LT(i, i_rated) ? i : i_rated;
    /* one correction with the full model */
    ia = dr->chg ? negated(i) : i;
    v = predict_v(s, h, dr, ia, rr12, g_h);
    err = f_sub(v, v_lim);
    err = dr->chg ? negated(err) : err;
    i = f_madd(i, err, inv_r);
    if (LT(i_soc, i)) {
        i = i_soc;
    }
    /* core temperature: the rise grows as I^2, scaled to the room left */
    if (!is_nan(t_core_max) && POS(i)) {
        bms_real room = f_sub(t_core_max, h->tc0), q_ub;
        if (!POS(room)) {
            return R(0.0);
        }
        ia = dr->chg ? negated(i) : i;
        /* i eta(i) <= KIN_B T i^2 / (2 i0), as 0 <= asinh(x) <= x for x >= 0: when that
           heat leaves room, the exact one does too and the reference does not scale */
        q_ub = f_madd(f_mul(f_mul(ia, ia), dr->ro_k), ia, s->kv);
        if (!(POS(s->kin_ub) && LE(f_mul(q_ub, h->a22_det), f_mul(room, R(0.999))))) {
            bms_real rise = f_mul(heat_w(s, dr, ia), h->a22_det);
            if (LT(room, rise)) {
                i = f_mul(i, BMS_SQRT(room / rise));
            }
        }
    }
    if (!NONNEG(i)) {
        return R(0.0);
    }
    return LT(i, i_rated) ? i : i_rated;
}

/* The direction's constants (model.step, model.voltage, model.shift_ahead by sign). */
static void direction_init(const shared *s, int chg, direction *dr) {
    const bms_real *p = s->m.p;
    bms_real g = chg ? p[SHIFT_GAIN_CHG] : p[SHIFT_GAIN];
    dr->chg = chg;
    dr->r0 = (chg ? s->tab[T_R0C] : s->tab[T_R0]) * s->r0s;
    dr->r2 = chg ? s->tab[T_R2C] : s->tab[T_R2];
    dr->ro = p[HEAT_RH] != R(0.0) ? s->tab[T_RH] * s->r0s : dr->r0;
    dr->ro_k = dr->ro + s->kin_ub;
    dr->gf = g * s->f;
    dr->shift = !(g == R(0.0) && s->d == R(0.0));
}

/* out[k] = exp(-hz[k] / tau), k < nh; pw[k] > 0: hz[k] = pw[k] hz[k-1], a power. */
static void decays(const bms_real *hz, const int *pw, int nh, bms_real tau, bms_real *out) {
    int k, n;
    for (k = 0; k < nh; k++) {
        if (pw[k] > 0) {
            bms_real b = out[k - 1], r;
            for (n = pw[k]; !(n & 1); n >>= 1) {
                b = f_mul(b, b);
            }
            for (r = b, n >>= 1; n > 0; n >>= 1) {   /* square and multiply */
                b = f_mul(b, b);
                if (n & 1) {
                    r = f_mul(r, b);
                }
            }
            out[k] = r;
        } else {
            out[k] = BMS_EXP(negated(hz[k]) / tau);
        }
    }
}

int bms_sop(const bms_real *p, const bms_real *x, const bms_real *lim, int nh,
            bms_real *i_dis, bms_real *i_chg) {
    shared s;
    horizon h;
    direction dis, chg;
    wts w;
    const bms_real *hz = lim + BMS_SOP_H0;
    bms_real a1[BMS_SOP_MAX_H], a2[BMS_SOP_MAX_H], as[BMS_SOP_MAX_H];
    int pw[BMS_SOP_MAX_H];
    bms_real hi, lo, tk, g1, g2, kc, ks, a11, a22, inv_det, inv_t, inv_cap, t_core_max;
    int k, status = BMS_OK, charge;

    if (nh < 1 || nh > BMS_SOP_MAX_H) {
        return BMS_ERR_NONFINITE;
    }
    for (k = 0; k < nh; k++) {
        i_dis[k] = R(0.0);
        i_chg[k] = R(0.0);
    }
    for (k = 0; k < BMS_NX - 1; k++) {
        if (!finite_real(x[k])) {
            return BMS_ERR_NONFINITE;
        }
    }
    for (k = 0; k < BMS_SOP_H0 + nh; k++) {
        if (k != BMS_SOP_T_CORE && !finite_real(lim[k])) {
            return BMS_ERR_NONFINITE;
        }
    }
    s.m.p = p;
    s.m.ns = (int)p[N_SOC];
    s.m.nt = (int)p[N_TEMP];
    s.m.nn = s.m.ns * s.m.nt;
    s.m.sg = p + BMS_HEADER;
    s.m.tg = s.m.sg + s.m.ns;
    s.m.t = s.m.tg + s.m.nt;
    s.soc = x[0] / R(100.0);
    s.v1 = x[1] / R(1000.0);
    s.v2 = x[2] / R(1000.0);
    s.tc = x[3];
    s.ts = x[4];
    s.d = lim[BMS_SOP_SHIFT];
    s.r0s = lim[BMS_SOP_R0];
    if (!POS(lim[BMS_SOP_CAP])) {
        return BMS_ERR_NONFINITE;
    }

    /* the present state: all tables, the OCV slope */
    bracket(s.m.tg, s.m.nt, s.tc, -1, R(0.0), &s.tb);
    bracket(s.m.sg, s.m.ns, s.soc, -1, R(0.0), &s.sb);
    s.inv_dt = s.m.nt > 1 ? R(1.0) / (s.m.tg[s.tb.j1] - s.m.tg[s.tb.j]) : R(0.0);
    s.inv_ds = s.m.ns > 1 ? R(1.0) / (s.m.sg[s.sb.j1] - s.m.sg[s.sb.j]) : R(0.0);
    weights(&s.m, &s.sb, &s.tb, &w);
    for (k = 0; k < BMS_NTAB; k++) {
        s.tab[k] = interp(&s.m, k, &w);
    }
    s.tab[T_OCV] = ocv_extend(&s.m, s.soc, &s.tb, s.tab[T_OCV]);
    for (k = 0; k < BMS_NTAB; k++) {
        if (!finite_real(s.tab[k])) {
            return BMS_ERR_NONFINITE;   /* a NaN in a table: no current either way */
        }
    }
    s.inv_2i0 = R(1.0) / (R(2.0) * s.tab[T_I0]);
    s.kbt = KIN_B * (s.tc + R(273.15));
    s.kin_ub = s.kbt * s.inv_2i0;
    s.k1v1 = p[HEAT_V1] * s.v1;
    s.k2v2 = p[HEAT_V2] * s.v2;
    s.kv = s.k1v1 + s.k2v2;
    hi = s.soc + SLOPE_DS <= R(1.0) ? s.soc + SLOPE_DS : s.soc;
    lo = hi - R(2.0) * SLOPE_DS >= R(0.0) ? hi - R(2.0) * SLOPE_DS : R(0.0);
    if (hi <= lo) {
        hi = lo + R(2.0) * SLOPE_DS;
    }
    s.slope = (ocv_at(&s.m, hi, &s.tb, s.sb.j, s.inv_ds)
               - ocv_at(&s.m, lo, &s.tb, s.sb.j, s.inv_ds)) / (hi - lo);
    /* diffusion (model.shift_ahead) and thermal (model.step) constants */
    tk = (s.tc > R(DIFF_TC_MIN) ? s.tc : R(DIFF_TC_MIN)) + R(273.15);
    s.f = BMS_EXP(p[SHIFT_E] * (R(1.0) / tk - R(1.0) / R(298.15)));
    inv_cap = R(1.0) / lim[BMS_SOP_CAP];
    g1 = R(1.0) / p[R_CS];
    g2 = R(1.0) / p[R_SA];
    t_core_max = lim[BMS_SOP_T_CORE];
    charge = !(s.tc < lim[BMS_SOP_T_CHG_MIN] || s.tc > lim[BMS_SOP_T_CHG_MAX]);
    /* exp(-T/tau) for every horizon: one exp per time constant when each horizon is a
       whole multiple (up to 16) of the one before */
    for (k = 0; k < nh; k++) {
        bms_real r = k > 0 ? hz[k] / hz[k - 1] : R(0.0);
        pw[k] = k > 0 && hz[k - 1] > R(0.0) && r >= R(1.0) && r <= R(16.0)
                && r == (bms_real)(int)r ? (int)r : 0;
    }
    decays(hz, pw, nh, s.tab[T_TAU1], a1);
    decays(hz, pw, nh, s.tab[T_TAU2], a2);
    decays(hz, pw, nh, p[SHIFT_TAU] * s.f, as);
    direction_init(&s, 0, &dis);
    direction_init(&s, 1, &chg);

    for (k = 0; k < nh; k++) {
        h.T = hz[k];
        if (!(h.T > R(0.0))) {
            status = BMS_ERR_NONFINITE;
            continue;
        }
        inv_t = R(1.0) / h.T;
        h.t_cap = f_mul(h.T, inv_cap);
        h.cap_t = f_mul(lim[BMS_SOP_CAP], inv_t);
        h.a1 = a1[k];
        h.a2 = a2[k];
        h.rr1 = f_mul(s.tab[T_R1], f_sub(R(1.0), h.a1));
        h.as = as[k];
        h.asd = f_mul(h.as, s.d);
        /* the shift after T at zero current (its gain: the discharge one, as i >= 0) */
        h.d0 = dis.shift ? h.asd : R(0.0);
        h.ocv0 = h.d0 == R(0.0) ? s.tab[T_OCV]
                                : ocv_at(&s.m, f_sub(s.soc, h.d0), &s.tb, s.sb.j, s.inv_ds);
        h.rc0 = f_madd(f_mul(s.v1, h.a1), s.v2, h.a2);
        /* model.step's backward Euler: T_core = ((kc tc + heat) a22 + g1 b2) / det */
        kc = f_mul(p[C_CORE], inv_t);
        ks = f_mul(p[C_SURF], inv_t);
        a11 = f_add(kc, g1);
        a22 = f_add(f_add(ks, g1), g2);
        inv_det = R(1.0) / f_sub(f_mul(a11, a22), f_mul(g1, g1));
        h.a22_det = f_mul(a22, inv_det);
        /* ((kc tc) a22 + g1 (ks ts + g2 ta)) / det */
        h.tc0 = f_mul(f_madd(f_mul(f_mul(kc, s.tc), a22), g1,
                             f_madd(f_mul(ks, s.ts), g2, lim[BMS_SOP_TA])), inv_det);
        i_dis[k] = limit(&s, &h, &dis, lim[BMS_SOP_V_MIN], lim[BMS_SOP_SOC_MIN],
                         lim[BMS_SOP_I_DIS], t_core_max);
        if (charge) {
            i_chg[k] = limit(&s, &h, &chg, lim[BMS_SOP_V_MAX], lim[BMS_SOP_SOC_MAX],
                             lim[BMS_SOP_I_CHG], t_core_max);
        }
        if (!finite_real(i_dis[k]) || !finite_real(i_chg[k])) {
            i_dis[k] = R(0.0);
            i_chg[k] = R(0.0);
            status = BMS_ERR_NONFINITE;
        }
    }
    return status;
}
