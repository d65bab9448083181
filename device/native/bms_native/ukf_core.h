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

#define BMS_NX 6                      /* soc %, v1 mV, v2 mV, T_core, T_surf, bias mA */
#define BMS_NZ 2                      /* terminal voltage mV, surface temperature */
#define BMS_NSIG (2 * BMS_NX + 1)
#define BMS_CFG_SIZE 12               /* layout: see ukf.py */
#define BMS_OUT_SIZE 5                /* v_pred V, ts_pred, innovation mV, NIS, status */
#define BMS_U_SIZE 5                  /* i_a, ta_c, dt_s, v_meas V, ts_meas degC */
#define BMS_NTAB 10                   /* tables in the flat params, see model.py */
#define BMS_HEADER 16                 /* params header length */
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

/* Check a flat params array of n values. On BMS_PARAMS_LENGTH, *expected (if not
 * NULL) is the length its header calls for. */
int bms_params_check(const bms_real *p, size_t n, size_t *expected);

/* One sentence per reason, for the bindings' error messages. */
const char *bms_params_reason(int reason);

/* Number of params values for the given grid sizes. */
size_t bms_params_size(size_t n_soc, size_t n_temp);

/*
 * One filter step. x[BMS_NX] and P[BMS_NX*BMS_NX] (row-major) are updated in place only
 * when the step succeeds; on an error they are left exactly as they were. cfg[10] (the
 * adaptive voltage noise) is updated on success. u = {i_a, ta_c, dt_s, v_meas, ts_meas};
 * a non-finite v_meas or ts_meas skips that measurement. out[0..3] are written on
 * success, out[4] always holds the returned status.
 */
int bms_ukf_step(bms_real *x, bms_real *P, const bms_real *p, size_t n_p, bms_real *cfg,
                 const bms_real *u, bms_real *out);

#endif
