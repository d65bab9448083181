/*
 * UKF step for the BMS: the same filter as device/bms/ukf.py over the model of
 * device/bms/model.py (same scaling, weights, gating, adaptive noise, floors and error
 * codes), arranged for a microcontroller without an FPU.
 *
 * On a Cortex-M0+ every float operation is a library call (RP2040 ROM through the SDK's
 * wrappers: add ~100 cycles, multiply ~90, divide ~120, compare ~70, exp ~540, log ~820),
 * so the step is written to do few of them: ~2,500 per step instead of ~7,500. The
 * results are the reference's up to rounding (a double build agrees with CPython to
 * ~1e-13 in SOC over 10,000 steps); what changes is the order of operations:
 *
 * - Sigma points that start from the same (SOC, core temperature) share their table
 *   lookups and exps: the tables depend on nothing else. Of the 13 points, those
 *   built from the columns of the Cholesky factor that leave SOC and T_core alone (L is
 *   lower triangular: columns 4 and 5 always do) are one group with the centre.
 * - Each lookup reads only the tables its caller uses (the step 6 of 10, the voltage 3).
 * - The RC pairs, the SOC count and the 2x2 thermal solve are linear in the state for
 *   given tables: their coefficients (and the solve's inverse) are formed once per step
 *   or per group, so each sigma point costs a few multiply-adds, no divide.
 * - Grid brackets use a binary search on integer keys (finite floats order as their bit
 *   patterns do once mapped to a signed key) and one divide per grid cell, not per point.
 * - Finiteness checks and sign tests look at the bits: no float compares in loops.
 * - The moments are summed over the six +/- pairs (differences and sums of the pair),
 *   the SOC and bias rows need only the differences (they propagate affinely), and the
 *   temperature measurement is the surface-temperature state itself, so its moments are
 *   read off the state covariance.
 *
 * A float32 build does every operation in single precision (no double promotion:
 * constants go through BMS_C, maths through BMS_EXP/BMS_SQRT/BMS_LOG: bms_float.h).
 */
#include "ukf_core.h"

#include "bms_float.h"

enum { SOC = 0, V1, V2, TC, TS, BIAS };
/* params header (model.py) */
enum { N_SOC = 0, N_TEMP, CAP_AS, C_CORE, C_SURF, R_CS, R_SA, HEAT_V2, SHIFT_GAIN, SHIFT_TAU,
       SHIFT_E, SHIFT_GAIN_CHG, HEAT_V1, HEAT_RH, HEADER_END };
typedef char header_matches[HEADER_END == BMS_HEADER ? 1 : -1];
enum { T_OCV = 0, T_R0, T_R0C, T_R1, T_TAU1, T_R2, T_TAU2, T_I0, T_R2C, T_RH };

/* 2R/F of the Butler-Volmer term (model.KIN_B), folded in double at compile time. */
#define KIN_B BMS_C(2.0 * 8.314462618 / 96485.33212)
#define OCV_TOP_SPAN BMS_C(0.1) /* model.OCV_TOP_SPAN */

#define NX BMS_NX
#define NY (NX + 1)   /* a propagated sigma point: the state, then its voltage (mV) */
#define ZV NX
#define NSIG BMS_NSIG

/* Sigma-point weights for alpha = 1, beta = 0, kappa = 1: all positive, so the
 * predicted covariance stays positive semi-definite in float32. */
#define W0 BMS_C(1.0 / 7.0)
#define WI BMS_C(0.5 / 7.0)
#define GAMMA BMS_C(2.6457513110645907) /* sqrt(NX + kappa), as math.sqrt(7.0) */

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
    for (k = 0; k < n; k++) {
        if (!bms_finite(g[k])) {
            return 0;
        }
    }
    for (k = 0; k + 1 < n; k++) {
        if (!(order_key(g[k]) < order_key(g[k + 1]))) {
            return 0;
        }
    }
    return 1;
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
        if (!bms_finite(p[k]) || !(order_key(p[k]) > 0)) {
            return BMS_PARAMS_CONSTS;
        }
    }
    /* The heated fractions of i*v1 and i*v2 lie in [0, 1] (calfile checks the same);
       the ohmic heat's source is a flag, 0 (R0) or 1 (the rh table). */
    if (!(p[HEAT_V2] >= BMS_C(0.0) && p[HEAT_V2] <= BMS_C(1.0))
        || !(p[HEAT_V1] >= BMS_C(0.0) && p[HEAT_V1] <= BMS_C(1.0))
        || !(p[HEAT_RH] == BMS_C(0.0) || p[HEAT_RH] == BMS_C(1.0))) {
        return BMS_PARAMS_CONSTS;
    }
    /* The diffusion shift's constants (the shift itself is an input: u[BMS_U_SHIFT]). */
    if (!bms_finite(p[SHIFT_GAIN]) || !non_negative(p[SHIFT_GAIN])
        || !bms_finite(p[SHIFT_GAIN_CHG]) || !non_negative(p[SHIFT_GAIN_CHG])
        || !bms_finite(p[SHIFT_TAU]) || !(order_key(p[SHIFT_TAU]) > 0)
        || !bms_finite(p[SHIFT_E])) {
        return BMS_PARAMS_CONSTS;
    }
    return BMS_PARAMS_OK;
}

const char *bms_params_reason(int reason) {
    switch (reason) {
    case BMS_PARAMS_OK:
        return "params are valid";
    case BMS_PARAMS_SHORT:
        return "params are shorter than their 14-value header";
    case BMS_PARAMS_COUNTS:
        return "params header n_soc/n_temp must be whole numbers from 1 to 128/32";
    case BMS_PARAMS_LENGTH:
        return "params length does not match n_soc and n_temp in its header";
    case BMS_PARAMS_GRID:
        return "params soc and temperature grids must be finite and strictly increasing";
    case BMS_PARAMS_CONSTS:
        return "params capacity and thermal constants must be positive and finite, heat fractions in [0, 1], the heat's R0/rh flag 0 or 1, the diffusion gains >= 0 and tau > 0";
    default:
        return "params are malformed";
    }
}

/* ---- table lookups (model.lookup) ------------------------------------------------ */

/* One grid axis and its last located cell. Sigma points mostly fall in one cell, so
 * the cell's inverse width is computed once and each point multiplies by it. */
typedef struct {
    const bms_real *g;
    int n;
    int j;            /* cached cell, -1 = none */
    bms_key klo, khi; /* order keys of g[j], g[j + 1] */
    bms_real inv;     /* 1 / (g[j + 1] - g[j]) */
} axis;

/* Where a value sits on an axis: cell j and weight w, v ~ g[j]*(1-w) + g[j+1]*w. */
typedef struct {
    int j;
    bms_real w;
} axis_pos;

static void axis_init(axis *ax, const bms_real *g, int n) {
    ax->g = g;
    ax->n = n;
    ax->j = -1;
    ax->klo = ax->khi = 0;
    ax->inv = BMS_C(0.0);
}

/* model._bracket: clamped at the ends (w = 0 below, 1 above); a NaN gives a NaN weight
 * so that it spreads to the result as in the reference. */
static axis_pos locate(axis *ax, bms_real v) {
    axis_pos r;
    const bms_real *g = ax->g;
    int n = ax->n, lo, hi, mid;
    bms_key k;
    k = order_key(v);
    /* Inside the cached cell (the usual case; a NaN never is): no search, no divide. */
    if (ax->j >= 0 && ax->klo < k && k <= ax->khi) {
        r.j = ax->j;
        r.w = f_mul(f_sub(v, g[r.j]), ax->inv);
        return r;
    }
    r.j = 0;
    r.w = BMS_C(0.0);
    if (n == 1) {
        return r;
    }
    if (is_nan(v)) {
        r.w = v;
        return r;
    }
    if (k <= order_key(g[0])) {
        return r;
    }
    if (k >= order_key(g[n - 1])) {
        r.j = n - 2;
        r.w = BMS_C(1.0);
        return r;
    }
    /* The cell with g[j] < v <= g[j + 1], by binary search; it becomes the cached one. */
    lo = 0;
    hi = n - 2;
    while (lo < hi) {
        mid = (lo + hi) / 2;
        if (order_key(g[mid + 1]) >= k) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    ax->j = lo;
    ax->klo = order_key(g[lo]);
    ax->khi = order_key(g[lo + 1]);
    ax->inv = BMS_C(1.0) / (g[lo + 1] - g[lo]);
    r.j = lo;
    r.w = f_mul(f_sub(v, g[lo]), ax->inv);
    return r;
}

/* One table over one grid cell, the bilinear form expanded as
 * c0 + c1 ws + c2 wt + c3 ws wt: the sigma points' voltages mostly fall in one cell,
 * where a table then costs three multiply-adds and no corner weights. */
typedef struct {
    int i, j;                 /* the cell, -1 = none yet */
    bms_real scale;           /* the table's values times scale (units of the caller) */
    bms_real c0, c1, c2, c3;
} patch;

/* The grid and its tables, read from the params once per step. */
typedef struct {
    const bms_real *p;
    const bms_real *tables;   /* table k starts at tables + k * size */
    int ns, nt, size;
    axis soc;                 /* SOC axis for the sigma points */
    axis soc_top;             /* SOC axis for the OCV's top extension (keeps soc's cache) */
    axis temp;
    patch patches[BMS_NTAB];  /* the last cell each table was read in */
} model;

static void model_init(model *m, const bms_real *p, bms_real r0_mv) {
    int k;
    m->p = p;
    m->ns = (int)p[N_SOC];
    m->nt = (int)p[N_TEMP];
    m->size = m->ns * m->nt;
    m->tables = p + BMS_HEADER + m->ns + m->nt;
    axis_init(&m->soc, p + BMS_HEADER, m->ns);
    axis_init(&m->soc_top, p + BMS_HEADER, m->ns);
    axis_init(&m->temp, p + BMS_HEADER + m->ns, m->nt);
    for (k = 0; k < BMS_NTAB; k++) {
        m->patches[k].i = -1;
        m->patches[k].scale = BMS_C(1.0);
    }
    /* The voltage wants mV: OCV and R0 (times the online resistance factor) scaled once
     * per cell instead of once per sigma point; i0 enters as 2 i0. */
    m->patches[T_OCV].scale = BMS_C(1000.0);
    m->patches[T_R0].scale = r0_mv;
    m->patches[T_R0C].scale = r0_mv;
    m->patches[T_I0].scale = BMS_C(2.0);
}

/* Table k at grid position (s, t), bilinear as model.lookup (every corner is read, so
 * a NaN in any of them spreads). */
static bms_real table_at(model *m, int k, axis_pos s, axis_pos t) {
    patch *pc = &m->patches[k];
    if (pc->i != s.j || pc->j != t.j) {
        const bms_real *tab = m->tables + k * m->size;
        int r0 = t.j * m->ns, r1 = m->nt > 1 ? r0 + m->ns : r0;
        int i1 = m->ns > 1 ? s.j + 1 : s.j;
        bms_real t00 = f_mul(tab[r0 + s.j], pc->scale), t01 = f_mul(tab[r0 + i1], pc->scale);
        bms_real t10 = f_mul(tab[r1 + s.j], pc->scale), t11 = f_mul(tab[r1 + i1], pc->scale);
        pc->i = s.j;
        pc->j = t.j;
        pc->c0 = t00;
        pc->c1 = f_sub(t01, t00);
        pc->c2 = f_sub(t10, t00);
        pc->c3 = f_sub(f_sub(t11, t10), pc->c1);
    }
    return f_madd(f_madd(pc->c0, pc->c1, s.w), t.w, f_madd(pc->c2, pc->c3, s.w));
}

/* The OCV at (soc, temperature position t): past the grid's top it keeps rising with
 * its mean slope over the top OCV_TOP_SPAN of SOC (model.lookup). */
static bms_real ocv_at(model *m, bms_real soc, axis_pos t) {
    bms_real v = table_at(m, T_OCV, locate(&m->soc, soc), t);
    if (m->ns > 1 && !is_nan(soc) && order_key(soc) > order_key(m->soc.g[m->ns - 1])) {
        bms_real top = m->soc.g[m->ns - 1], lo_span = top - m->soc.g[0], v_lo;
        bms_real span = lo_span < OCV_TOP_SPAN ? lo_span : OCV_TOP_SPAN;
        v_lo = table_at(m, T_OCV, locate(&m->soc_top, top - span), t);
        v = v + (v - v_lo) * (soc - top) / span;
    }
    return v;
}

/* asinh(x), written out as model.kinetic_v does (odd-symmetric for accuracy). */
static bms_real asinh_odd(bms_real x) {
    bms_real ax = non_negative(x) ? x : negated(x);
    bms_real eta = BMS_LOG(f_add(ax, BMS_SQRT(f_madd(BMS_C(1.0), ax, ax))));
    return non_negative(x) ? eta : negated(eta);
}

/* ---- the model over the sigma points (model.step, model.voltage) ------------------ */

/* Per-step constants of the linear parts, in filter units (SOC %, v1/v2 mV). */
typedef struct {
    bms_real i_a, dt_s;
    bms_real r0s;              /* the cell's R0 factor */
    bms_real soc_per_a;        /* SOC % lost per ampere over the step: 100 dt / C */
    bms_real k1, k2;           /* heated fractions of i*v1, i*v2 per mV */
    bms_real kc, ks;           /* heat capacities / dt */
    bms_real g2_ta;            /* ambient's pull on the surface node */
    bms_real e11, e12, e22;    /* inverse of the backward-Euler matrix [[kc+g1, -g1], [-g1, ks+g1+g2]] */
    bms_real shift;            /* diffusion shift (SOC fraction) */
    int has_shift;             /* shift != 0: the OCV is read at soc - shift */
    int heat_rh;               /* the ohmic heat takes the rh table (else R0 / R0c) */
} consts;

/* Table-derived coefficients shared by the sigma points that start from one
 * (soc, T_core); index [0] for a discharging point (i >= 0), [1] for a charging one. */
typedef struct {
    bms_bits soc_bits, tc_bits;
    axis_pos s, t;             /* the group's place on the grid */
    int lead;                  /* first group with the same SOC and temperature cell */
    unsigned need;             /* bit k: table k is needed */
    union {                    /* the tables, until group_coefs turns them into ... */
        bms_real tab[BMS_NTAB];
        struct {               /* ... the coefficients of model.step */
            bms_real a1, a2;       /* exp(-dt / tau) */
            bms_real c1, c2[2];    /* mV per A into v1, v2: 1000 r (1 - a) */
            bms_real ro[2];        /* ohmic heat resistance */
            bms_real inv_2i0;      /* 1 / (2 i0) */
            bms_real kb_t;         /* KIN_B * T_kelvin */
            bms_real kc_tc;        /* kc * T_core */
        } c;
    } u;
} group;

/* Everything one step needs, kept on the caller's stack. */
typedef struct {
    bms_real L[NX * NX];       /* Cholesky factor of P */
    bms_real Pn[NX * NX];      /* jittered P, then the new P */
    bms_real X[NSIG * NY];     /* sigma points, then propagated with their voltage */
    bms_real i[NSIG];          /* true current per sigma point */
    unsigned char grp[NSIG];   /* group of each sigma point */
    group g[NSIG];
    bms_real xm[NX];
    bms_real xn[NX];
    bms_real pxz[NX * 2];
    bms_real K[NX * 2];
} workspace;

static void consts_init(const bms_real *p, const bms_real *u, consts *k) {
    bms_real g1, g2, a11, a22, inv_det;
    k->i_a = u[BMS_U_I];
    k->dt_s = u[BMS_U_DT];
    k->r0s = u[BMS_U_R0];
    k->soc_per_a = BMS_C(100.0) * u[BMS_U_DT] / u[BMS_U_CAP];
    k->k1 = p[HEAT_V1] * BMS_C(1e-3);
    k->k2 = p[HEAT_V2] * BMS_C(1e-3);
    /* Backward Euler on the two thermal nodes: the 2x2 matrix is the same for every
     * sigma point, so it is inverted once. */
    g1 = BMS_C(1.0) / p[R_CS];
    g2 = BMS_C(1.0) / p[R_SA];
    k->kc = p[C_CORE] / u[BMS_U_DT];
    k->ks = p[C_SURF] / u[BMS_U_DT];
    a11 = k->kc + g1;
    a22 = k->ks + g1 + g2;
    inv_det = BMS_C(1.0) / (a11 * a22 - g1 * g1);
    k->e11 = a22 * inv_det;
    k->e12 = g1 * inv_det;
    k->e22 = a11 * inv_det;
    k->g2_ta = g2 * u[BMS_U_TA];
    k->shift = u[BMS_U_SHIFT];
    k->has_shift = mag_bits(u[BMS_U_SHIFT]) != 0;
    k->heat_rh = mag_bits(p[HEAT_RH]) != 0;
}

/* The tables each group needs, by rows: a bilinear value is lo + wt * (hi - lo) with lo
 * and hi the two temperature rows interpolated along SOC, and groups at the same SOC and
 * temperature cell (most: only the points moved along SOC differ) share lo and hi, so
 * each of them costs one multiply-add per table. */
static void group_tables(const model *m, workspace *w, int n) {
    bms_real lo[NSIG], d[NSIG], ws, a, b;
    const bms_real *t;
    int k, q, r, i, i1, j, j1;
    unsigned done;
    for (k = 0; k < BMS_NTAB; k++) {
        t = m->tables + k * m->size;
        done = 0;
        for (q = 0; q < n; q++) {
            group *g = &w->g[q];
            if (!(g->need & (1u << k))) {
                continue;
            }
            r = g->lead;
            if (!(done & (1u << r))) {
                i = g->s.j;
                i1 = m->ns > 1 ? i + 1 : i;
                j = g->t.j * m->ns;
                j1 = m->nt > 1 ? j + m->ns : j;
                ws = g->s.w;
                a = f_madd(t[j + i], ws, f_sub(t[j + i1], t[j + i]));
                b = f_madd(t[j1 + i], ws, f_sub(t[j1 + i1], t[j1 + i]));
                lo[r] = a;
                d[r] = f_sub(b, a);
                done |= 1u << r;
            }
            g->u.tab[k] = f_madd(lo[r], g->t.w, d[r]);
        }
    }
}

/* The group's model coefficients from its tables, for the sides its members need
 * (the tables are read before the coefficients overwrite them). */
static void group_coefs(const consts *k, bms_real tc, group *g) {
    int rh = k->heat_rh, side;
    bms_real tab[BMS_NTAB], a1, a2, c2[2] = {BMS_C(0.0), BMS_C(0.0)};
    bms_real ro[2] = {BMS_C(0.0), BMS_C(0.0)};
    for (side = 0; side < BMS_NTAB; side++) {
        tab[side] = g->u.tab[side];
    }
    a1 = BMS_EXP(negated(k->dt_s) / tab[T_TAU1]);
    a2 = BMS_EXP(negated(k->dt_s) / tab[T_TAU2]);
    for (side = 0; side < 2; side++) {
        if (g->need & (1u << (side == 0 ? T_R2 : T_R2C))) {
            c2[side] = f_mul(f_mul(tab[side == 0 ? T_R2 : T_R2C], f_sub(BMS_C(1.0), a2)),
                             BMS_C(1000.0));
            ro[side] = f_mul(tab[rh ? T_RH : (side == 0 ? T_R0 : T_R0C)], k->r0s);
        }
    }
    g->u.c.a1 = a1;
    g->u.c.a2 = a2;
    g->u.c.c1 = f_mul(f_mul(tab[T_R1], f_sub(BMS_C(1.0), a1)), BMS_C(1000.0));
    for (side = 0; side < 2; side++) {
        g->u.c.c2[side] = c2[side];
        g->u.c.ro[side] = ro[side];
    }
    g->u.c.inv_2i0 = BMS_C(1.0) / f_mul(BMS_C(2.0), tab[T_I0]);
    g->u.c.kb_t = f_mul(KIN_B, f_add(tc, BMS_C(273.15)));
    g->u.c.kc_tc = f_mul(k->kc, tc);
}

/* Sigma points x +- GAMMA * column of L. L is lower triangular, so column j moves only
 * states j.. (the others stay exactly x). */
static void sigma_points(const bms_real *x, workspace *w) {
    int sg, j, k;
    bms_real d;
    for (sg = 0; sg < NSIG; sg++) {
        for (k = 0; k < NX; k++) {
            w->X[sg * NY + k] = x[k];
        }
    }
    for (j = 0; j < NX; j++) {
        for (k = j; k < NX; k++) {
            d = f_mul(GAMMA, w->L[k * NX + j]);
            w->X[(1 + j) * NY + k] = f_add(w->X[(1 + j) * NY + k], d);
            w->X[(1 + NX + j) * NY + k] = f_sub(w->X[(1 + NX + j) * NY + k], d);
        }
    }
}

/* Sort the sigma points into groups of equal (soc, T_core), then fill each group once. */
static void make_groups(model *m, const consts *k, workspace *w) {
    int sg, q, r, n = 0;
    int rh = k->heat_rh;
    for (sg = 0; sg < NSIG; sg++) {
        const bms_real *X = w->X + sg * NY;
        bms_bits sb = bits_of(X[SOC]), tb = bits_of(X[TC]);
        bms_real i_true = f_sub(k->i_a, f_mul(X[BIAS], BMS_C(1e-3)));
        int side = non_negative(i_true) ? 0 : 1;
        group *g;
        for (q = 0; q < n; q++) {
            if (w->g[q].soc_bits == sb && w->g[q].tc_bits == tb) {
                break;
            }
        }
        g = &w->g[q];
        if (q == n) {
            g->soc_bits = sb;
            g->tc_bits = tb;
            g->need = (1u << T_TAU1) | (1u << T_TAU2) | (1u << T_R1) | (1u << T_I0);
            g->t = locate(&m->temp, X[TC]);
            for (r = 0; r < n && w->g[r].soc_bits != sb; r++) {
            }
            g->s = r < n ? w->g[r].s : locate(&m->soc, X[SOC] * BMS_C(0.01));
            for (r = 0; r < n && !(w->g[r].soc_bits == sb && w->g[r].t.j == g->t.j); r++) {
            }
            g->lead = r;
            n++;
        }
        w->grp[sg] = (unsigned char)q;
        w->i[sg] = i_true;
        g->need |= (1u << (side == 0 ? T_R2 : T_R2C))
                   | (1u << (rh ? T_RH : (side == 0 ? T_R0 : T_R0C)));
    }
    group_tables(m, w, n);
    for (q = 0; q < n; q++) {
        for (sg = 0; w->grp[sg] != q; sg++) {
        }
        group_coefs(k, w->X[sg * NY + TC], &w->g[q]);
    }
}

/* One sigma point through model.step and model.voltage, in filter units. */
static void propagate_point(model *m, const consts *k, const group *g, bms_real i,
                            bms_real *X) {
    int side = non_negative(i) ? 0 : 1;
    bms_real heat, b1, b2, soc_f, eta, r0, ocv;
    axis_pos s, t;
    /* model.step: heat i*(ro*i + k1*v1 + k2*v2 + eta), RC pairs, SOC, thermal nodes. */
    eta = f_mul(g->u.c.kb_t, asinh_odd(f_mul(i, g->u.c.inv_2i0)));
    heat = f_mul(i, f_add(f_madd(f_madd(f_mul(g->u.c.ro[side], i), k->k1, X[V1]), k->k2, X[V2]),
                          eta));
    X[SOC] = f_sub(X[SOC], f_mul(i, k->soc_per_a));
    X[V1] = f_madd(f_mul(g->u.c.a1, X[V1]), g->u.c.c1, i);
    X[V2] = f_madd(f_mul(g->u.c.a2, X[V2]), g->u.c.c2[side], i);
    b1 = f_add(g->u.c.kc_tc, heat);
    b2 = f_add(f_mul(k->ks, X[TS]), k->g2_ta);
    X[TC] = f_madd(f_mul(k->e11, b1), k->e12, b2);
    X[TS] = f_madd(f_mul(k->e12, b1), k->e22, b2);
    /* model.voltage at the new state: R0 and i0 at (soc, T_core), the OCV at the
     * diffusion-shifted SOC. */
    soc_f = f_mul(X[SOC], BMS_C(0.01));
    t = locate(&m->temp, X[TC]);
    s = locate(&m->soc, soc_f);
    r0 = table_at(m, side == 0 ? T_R0 : T_R0C, s, t);
    eta = f_mul(f_mul(KIN_B * BMS_C(1000.0), f_add(X[TC], BMS_C(273.15))),
                asinh_odd(i / table_at(m, T_I0, s, t)));
    if (k->has_shift) {
        ocv = ocv_at(m, f_sub(soc_f, k->shift), t);
    } else {
        ocv = ocv_at(m, soc_f, t);
    }
    X[ZV] = f_sub(f_sub(f_sub(f_sub(ocv, X[V1]), X[V2]), f_mul(r0, i)), eta);
}

/* ---- filter (ukf.py) ------------------------------------------------------------- */

/* Lower Cholesky factor of the n x n row-major a into out; 0 if not positive definite. */
static int cholesky(const bms_real *a, int n, bms_real *out) {
    int i, j, k;
    bms_real s, d, inv;
    for (j = 0; j < n; j++) {
        s = a[j * n + j];
        for (k = 0; k < j; k++) {
            s = f_sub(s, f_mul(out[j * n + k], out[j * n + k]));
        }
        if (!(s > BMS_C(0.0))) {
            return 0;
        }
        d = BMS_SQRT(s);
        inv = BMS_C(1.0) / d;
        out[j * n + j] = d;
        for (i = j + 1; i < n; i++) {
            s = a[i * n + j];
            for (k = 0; k < j; k++) {
                s = f_sub(s, f_mul(out[i * n + k], out[j * n + k]));
            }
            out[i * n + j] = f_mul(s, inv);
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

/* Innovation statistics of the voltage (v) and temperature (t) channels. */
typedef struct {
    bms_real zv, zt, svv, svt, stt;
} innov;

/* Rows of a propagated sigma point that are one affine map of the sigma point for all of
 * them: the SOC (coulomb counting with the bias-corrected current) and the bias (a random
 * walk). The +/- points of a pair then sit symmetrically about the centre, which is the
 * mean. */
static int affine_row(int r) {
    return r == SOC || r == BIAS;
}

/* sum over the pairs j of a[j][r] * a[j][c] */
static bms_real pair_dot(const bms_real *a, int r, int c) {
    const bms_real *pr = a + r, *pc = a + c, *end = a + NX * NY;
    bms_real acc = f_mul(*pr, *pc);
    for (pr += NY, pc += NY; pr < end; pr += NY, pc += NY) {
        acc = f_madd(acc, *pr, *pc);
    }
    return acc;
}

/* Predicted mean xm, covariance Pn (plus process noise), the voltage's moments and the
 * cross covariance pxz: ukf.py's weighted sums over the 13 points, taken over the six
 * +/- pairs. With Y0 the centre, u_j = Y+ - Y- and s_j = (Y+ - Y0) + (Y- - Y0),
 *   m = mean - Y0 = WI sum_j s_j,  cov = WI/2 sum_j (u_j u_j' + s_j s_j') - m m'
 * (W0 + 12 WI = 1), and s = m = 0 on the affine rows. The temperature measurement is the
 * propagated T_surf itself, so its moments are the state's (before the noise). */
static void moments(const bms_real *cfg, bms_real dt_s, workspace *w, innov *in) {
    /* u_j replaces Y+ (rows 1..6 of X) and s_j replaces Y- (rows 7..12), in place. */
    const bms_real *Y0 = w->X, *u = w->X + NY, *sm = w->X + (1 + NX) * NY;
    bms_real *Yp, *Ym, m[NY], cov[NY * NY], acc, v;
    int r, c, j;
    for (r = 0; r < NY; r++) {
        acc = BMS_C(0.0);
        for (j = 0; j < NX; j++) {
            Yp = w->X + (1 + j) * NY;
            Ym = w->X + (1 + NX + j) * NY;
            v = f_sub(Yp[r], Ym[r]);
            if (!affine_row(r)) {
                Ym[r] = f_add(f_sub(Yp[r], Y0[r]), f_sub(Ym[r], Y0[r]));
                acc = f_add(acc, Ym[r]);
            }
            Yp[r] = v;
        }
        m[r] = affine_row(r) ? BMS_C(0.0) : f_mul(WI, acc);
    }
    for (r = 0; r < NY; r++) {
        for (c = 0; c <= r; c++) {
            v = pair_dot(u, r, c);
            if (affine_row(r) || affine_row(c)) {
                v = f_mul(WI * BMS_C(0.5), v);
            } else {
                v = f_sub(f_mul(WI * BMS_C(0.5), f_add(v, pair_dot(sm, r, c))),
                          f_mul(m[r], m[c]));
            }
            cov[r * NY + c] = cov[c * NY + r] = v;
        }
    }
    for (r = 0; r < NX; r++) {
        w->xm[r] = affine_row(r) ? Y0[r] : f_add(Y0[r], m[r]);
        for (c = 0; c < NX; c++) {
            w->Pn[r * NX + c] = cov[r * NY + c];
        }
        w->pxz[r * 2] = cov[r * NY + ZV];
        w->pxz[r * 2 + 1] = cov[r * NY + TS];
        w->Pn[r * NX + r] = f_madd(w->Pn[r * NX + r], f_mul(cfg[BMS_CFG_Q + r], cfg[BMS_CFG_Q + r]),
                                   dt_s);
    }
    in->zv = Y0[ZV] + m[ZV];
    in->zt = w->xm[TS];
    in->svv = cov[ZV * NY + ZV];
    in->svt = cov[TS * NY + ZV];
    in->stt = cov[TS * NY + TS];
}

/* Pn -= K Pxz^T (symmetric: K Pxz^T = Pxz S^-1 Pxz^T), diagonal floored at 1 % of the
 * process noise. */
static void update_covariance(const bms_real *cfg, workspace *w) {
    bms_real *Pn = w->Pn, *K = w->K, *pxz = w->pxz, v, floor;
    int a, b, k;
    for (a = 0; a < NX; a++) {
        for (b = 0; b <= a; b++) {
            v = f_sub(Pn[a * NX + b],
                      f_madd(f_mul(K[a * 2], pxz[b * 2]), K[a * 2 + 1], pxz[b * 2 + 1]));
            Pn[a * NX + b] = v;
            Pn[b * NX + a] = v;
        }
    }
    for (k = 0; k < NX; k++) {
        floor = f_mul(f_mul(cfg[BMS_CFG_Q + k], cfg[BMS_CFG_Q + k]), BMS_C(1e-2));
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
    out[BMS_OUT_STATUS] = (bms_real)status;
    return status;
}

/* ukf.step's stages, under the same names: factor, sigma_points, propagate, moments,
 * update, update_covariance, adapt_noise, finish (the last three inline but for one). */
int bms_ukf_step(bms_real *x, bms_real *P, const bms_real *p, size_t n_p, bms_real *cfg,
                 const bms_real *u, bms_real *out) {
    workspace w;
    model m;
    consts kc;
    innov in;
    bms_real v_meas = u[BMS_U_V], ts_meas = u[BMS_U_TS];
    bms_real rv, rt, ev, et, sv, gate, s11, s22, det, i11, i22, i12, k1, k2;
    bms_real rv_new = cfg[BMS_CFG_RV];
    int use_v, use_t, k, sg;

    if (bms_params_check(p, n_p, NULL) != BMS_PARAMS_OK) {
        return fail(out, BMS_ERR_PARAMS);
    }
    /* Inputs the model divides by or integrates: refuse rather than spread NaN. */
    if (!bms_finite(u[BMS_U_I]) || !bms_finite(u[BMS_U_TA]) || !bms_finite(u[BMS_U_DT])
        || !(order_key(u[BMS_U_DT]) > 0) || !bms_finite(u[BMS_U_CAP])
        || !(order_key(u[BMS_U_CAP]) > 0) || !bms_finite(u[BMS_U_R0])
        || !bms_finite(u[BMS_U_SHIFT])) {
        return fail(out, BMS_ERR_NONFINITE);
    }
    model_init(&m, p, u[BMS_U_R0] * BMS_C(1000.0));

    if (!factor(P, &w)) {
        return fail(out, BMS_ERR_NOT_PD);
    }
    consts_init(p, u, &kc);
    sigma_points(x, &w);
    /* propagate: the model's tables once per group, then each point */
    make_groups(&m, &kc, &w);
    for (sg = 0; sg < NSIG; sg++) {
        propagate_point(&m, &kc, &w.g[w.grp[sg]], w.i[sg], w.X + sg * NY);
    }
    moments(cfg, u[BMS_U_DT], &w, &in);

    /* update: innovation, gate, gain and state (ukf.update) */
    rv = cfg[BMS_CFG_RV];
    rt = cfg[BMS_CFG_T_NOISE] * cfg[BMS_CFG_T_NOISE];
    use_v = bms_finite(v_meas);
    use_t = bms_finite(ts_meas);
    ev = use_v ? v_meas * BMS_C(1000.0) - in.zv : BMS_C(0.0);
    et = use_t ? ts_meas - in.zt : BMS_C(0.0);
    /* Gate: a voltage innovation far outside the predicted spread is clipped, so one
     * glitch cannot yank the SOC. (sv <= 0 fails the determinant test below.) */
    sv = in.svv + rv;
    gate = sv > BMS_C(0.0) ? cfg[BMS_CFG_GATE] * BMS_SQRT(sv) : BMS_C(0.0);
    if (ev > gate) {
        ev = gate;
    } else if (ev < negated(gate)) {
        ev = negated(gate);
    }
    if (!use_v) {
        in.svt = BMS_C(0.0);
        for (k = 0; k < NX; k++) {
            w.pxz[k * 2] = BMS_C(0.0);
        }
        s11 = BMS_C(1.0);
    } else {
        s11 = sv;
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
    i12 = negated(in.svt) / det;

    /* K = Pxz S^-1 ; x += K e ; P -= K S K^T = K Pxz^T */
    for (k = 0; k < NX; k++) {
        k1 = f_madd(f_mul(w.pxz[k * 2], i11), w.pxz[k * 2 + 1], i12);
        k2 = f_madd(f_mul(w.pxz[k * 2], i12), w.pxz[k * 2 + 1], i22);
        w.xn[k] = f_madd(f_madd(w.xm[k], k1, ev), k2, et);
        w.K[k * 2] = k1;
        w.K[k * 2 + 1] = k2;
    }
    update_covariance(cfg, &w);

    /* adapt_noise: covariance matching on the innovation, bounded. */
    if (use_v && cfg[BMS_CFG_ADAPT] > BMS_C(0.0)) {
        bms_real target = ev * ev - in.svv;
        bms_real lo = cfg[BMS_CFG_V_FLOOR] * cfg[BMS_CFG_V_FLOOR];
        bms_real hi = cfg[BMS_CFG_V_CEIL] * cfg[BMS_CFG_V_CEIL];
        rv = rv + cfg[BMS_CFG_ADAPT] * (target - rv);
        rv_new = rv < lo ? lo : (rv > hi ? hi : rv);
    }
    /* finish: SOC stays in a physical window, everything finite. */
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
    cfg[BMS_CFG_RV] = rv_new;
    out[BMS_OUT_V] = in.zv * BMS_C(1e-3);
    out[BMS_OUT_TS] = in.zt;
    out[BMS_OUT_INNOV] = use_v ? v_meas * BMS_C(1000.0) - in.zv : BMS_C(0.0);
    out[BMS_OUT_NIS] = ev * (i11 * ev + i12 * et) + et * (i12 * ev + i22 * et);
    out[BMS_OUT_STATUS] = (bms_real)BMS_OK;
    return BMS_OK;
}
