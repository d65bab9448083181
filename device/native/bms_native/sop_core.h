/*
 * State of power for one cell in portable C99: device/bms/sop.py (`limits`) for every
 * horizon and both directions in one call, over the same ECM + thermal model
 * (device/bms/model.py). Same math and the same limits as the reference; the work that
 * does not depend on the horizon or the direction (the table lookup at the present
 * state, the OCV slope, the thermal and diffusion constants) is done once.
 *
 * float32 by default (bms_real, see ukf_core.h). No malloc, no static state: reentrant.
 */
#ifndef BMS_SOP_CORE_H
#define BMS_SOP_CORE_H

#include "ukf_core.h"

/* Layout of the limits vector `lim` (sop.py: lim_vec). */
#define BMS_SOP_TA 0          /* ambient temperature (degC), written before each call */
#define BMS_SOP_V_MIN 1       /* lower terminal voltage (V) */
#define BMS_SOP_V_MAX 2       /* upper terminal voltage (V) */
#define BMS_SOP_I_DIS 3       /* rated discharge current (A) */
#define BMS_SOP_I_CHG 4       /* rated charge current (A) */
#define BMS_SOP_T_CORE 5      /* core temperature limit (degC); NaN: none */
#define BMS_SOP_T_CHG_MIN 6   /* no charge below this core temperature (degC) */
#define BMS_SOP_T_CHG_MAX 7   /* no charge above this core temperature (degC) */
#define BMS_SOP_SOC_MIN 8     /* SOC window (fraction) */
#define BMS_SOP_SOC_MAX 9
#define BMS_SOP_CAP 10        /* the cell's capacity (A*s), written before each call */
#define BMS_SOP_R0 11         /* the cell's R0 factor, written before each call */
#define BMS_SOP_SHIFT 12      /* the cell's diffusion shift (SOC fraction), ditto */
#define BMS_SOP_H0 13         /* then the horizons (s), one per output value */
#define BMS_SOP_MAX_H 8       /* most horizons in one call */

/*
 * i_dis[k], i_chg[k] (A, both >= 0): the largest constant discharge / charge current for
 * horizon lim[BMS_SOP_H0 + k], k < nh. p: a params array accepted by bms_params_check
 * (the caller checks it once; only read, the cell's own values are in lim); x: the filter
 * state in filter units (ukf.py: SOC %, v1 mV,
 * v2 mV, T_core, T_surf, bias mA; the bias is not used). Returns BMS_OK, or
 * BMS_ERR_NONFINITE when an input or a result is not finite, the capacity or a horizon
 * not positive:
 * those outputs are 0 (no current allowed).
 */
int bms_sop(const bms_real *p, const bms_real *x, const bms_real *lim, int nh,
            bms_real *i_dis, bms_real *i_chg);

#endif
