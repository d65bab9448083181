/*
 * The BMS filter step in portable C99: one unscented Kalman filter predict + update
 * over the ECM + two-node thermal cell model. It implements exactly the reference in
 * device/bms/ukf.py and device/bms/model.py (same scaling, weights, order of
 * operations, gating, adaptive noise, floors and error codes).
 *
 * float32 by default (as on rp2 and esp32); build with -DBMS_REAL_DOUBLE for double.
 * No malloc, no recursion, no static state: the workspace lives on the caller's stack
 * (bms_ukf_step's frame is 2.6 KB on a Cortex-M0+ in float32 at -Os, about 2.7 KB with
 * its callees; 5 KB in double), so the step is reentrant (both rp2 cores may call it).
 */
#ifndef BMS_UKF_CORE_H
#define BMS_UKF_CORE_H

#include <stddef.h>

#ifdef BMS_REAL_DOUBLE
typedef double bms_real;
#else
typedef float bms_real;
#endif

/* The version of the layouts below and of the functions' arguments: ukf.ABI must equal
 * it (the bindings export it as ABI, with BMS_LAYOUT's sizes as LAYOUT). */
#define BMS_ABI 2

#define BMS_NX 6                      /* soc %, v1 mV, v2 mV, T_core, T_surf, bias mA */
#define BMS_NZ 2                      /* terminal voltage mV, surface temperature */
#define BMS_NSIG (2 * BMS_NX + 1)
#define BMS_NTAB 10                   /* tables in the flat params, see model.py */
#define BMS_HEADER 14                 /* params header length (model.HEADER) */

/* u: the step's inputs, read only (ukf.py U_*). */
#define BMS_U_I 0                     /* cell current A (discharge positive) */
#define BMS_U_TA 1                    /* ambient temperature degC */
#define BMS_U_DT 2                    /* time since the last step s (> 0) */
#define BMS_U_V 3                     /* measured terminal voltage V (NaN: skipped) */
#define BMS_U_TS 4                    /* measured surface temperature degC (NaN: skipped) */
#define BMS_U_CAP 5                   /* the cell's capacity A*s (> 0) */
#define BMS_U_R0 6                    /* the cell's R0 factor (1 = as calibrated) */
#define BMS_U_SHIFT 7                 /* the cell's diffusion shift (SOC fraction) */
#define BMS_U_SIZE 8

/* cfg: the filter's tuning (ukf.py CFG_*). */
#define BMS_CFG_Q 0                   /* [0, NX): process noise std per sqrt(s) per state */
#define BMS_CFG_V_FLOOR 6             /* voltage noise std floor mV */
#define BMS_CFG_T_NOISE 7             /* temperature noise std degC */
#define BMS_CFG_V_CEIL 8              /* voltage noise std ceiling mV */
#define BMS_CFG_ADAPT 9               /* voltage noise adaptation rate (0: fixed) */
#define BMS_CFG_RV 10                 /* adaptive voltage noise variance mV^2 (updated) */
#define BMS_CFG_GATE 11               /* innovation gate (sigmas) */
#define BMS_CFG_SIZE 12

/* out: what a step reports (ukf.py OUT_*). */
#define BMS_OUT_V 0                   /* predicted terminal voltage V */
#define BMS_OUT_TS 1                  /* predicted surface temperature degC */
#define BMS_OUT_INNOV 2               /* voltage innovation mV (before the gate) */
#define BMS_OUT_NIS 3                 /* normalised innovation squared */
#define BMS_OUT_STATUS 4              /* the returned status */
#define BMS_OUT_SIZE 5

/* The sizes a binding exports as LAYOUT, in ukf.LAYOUT's order. */
#define BMS_LAYOUT_N 6
#define BMS_LAYOUT {BMS_NX, BMS_U_SIZE, BMS_CFG_SIZE, BMS_OUT_SIZE, BMS_HEADER, BMS_NTAB}
#define BMS_MAX_SOC 128               /* largest accepted table grid */
#define BMS_MAX_TEMP 32

/* Status codes of bms_ukf_step (0..2 are shared with ukf.py). */
#define BMS_OK 0
#define BMS_ERR_NONFINITE 1           /* a non-finite input or result */
#define BMS_ERR_NOT_PD 2              /* covariance not positive definite */
#define BMS_ERR_PARAMS 3              /* params array malformed: see bms_params_check */

/* Reasons returned by bms_params_check. */
#define BMS_PARAMS_OK 0
#define BMS_PARAMS_SHORT 1            /* shorter than the header */
#define BMS_PARAMS_COUNTS 2           /* n_soc / n_temp not whole numbers in range */
#define BMS_PARAMS_LENGTH 3           /* length does not match n_soc, n_temp */
#define BMS_PARAMS_GRID 4             /* a grid is not strictly increasing */
#define BMS_PARAMS_CONSTS 5           /* capacity, thermal values not positive/finite */
/* params are the calibration's only (model.py) and never written: what differs per cell
 * (capacity, R0 factor, diffusion shift) comes in u, so a pack's cells share one array. */

/* Check a flat params array of n values. On BMS_PARAMS_LENGTH, *expected (if not
 * NULL) is the length its header calls for. */
int bms_params_check(const bms_real *p, size_t n, size_t *expected);

/* One sentence per reason, for the bindings' error messages. */
const char *bms_params_reason(int reason);

/* Number of params values for the given grid sizes. */
size_t bms_params_size(size_t n_soc, size_t n_temp);

/*
 * One filter step. x[BMS_NX] and P[BMS_NX*BMS_NX] (row-major) are updated in place only
 * when the step succeeds; on an error they are left exactly as they were.
 * cfg[BMS_CFG_RV] (the adaptive voltage noise) is updated on success. u[BMS_U_SIZE]:
 * the inputs (BMS_U_*); a non-finite u[BMS_U_V] or u[BMS_U_TS] skips that measurement,
 * any other non-finite input (or dt, capacity not positive) is BMS_ERR_NONFINITE.
 * out[BMS_OUT_V .. BMS_OUT_NIS] are written on success, out[BMS_OUT_STATUS] always holds
 * the returned status. p is only read.
 */
int bms_ukf_step(bms_real *x, bms_real *P, const bms_real *p, size_t n_p, bms_real *cfg,
                 const bms_real *u, bms_real *out);

#endif
