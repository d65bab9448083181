/*
 * MicroPython user C module `bms_native`: the UKF filter step of device/bms/ukf.py in C.
 *
 *   bms_native.ukf_step(x, P, params, cfg, u, out) -> int status
 *   bms_native.sop(params, x, lim, i_dis, i_chg) -> int status   (state of power, sop_core.h)
 *   bms_native.cells(tap_v, tap_st, cell_v, cell_st, last_v, rep_v, odd_v, stacked, lo, hi,
 *                    hold) -> None   (sensors.Sensors._cells' validation loop)
 *   bms_native.taps(code, failed, scale, tap_v, tap_st) -> None   (ads1115.TapBank.read_into)
 *   bms_native.extremes(v, out) -> bool   (min and max of an array('f') into out)
 *
 * All six arguments come in through the buffer protocol: array('f') or dense float ulab
 * ndarrays (typecode 'd' instead in a -DBMS_REAL_DOUBLE build). x (6), P (36), cfg (12)
 * and out (5) are updated in place; params (flat, model.py layout) and u (8: ukf_core.h's
 * BMS_U_*) are read. Nothing is allocated per step; the workspace lives on the C stack.
 * Status: 0 ok, 1 non-finite, 2 not positive definite.
 *
 * ABI (ukf_core.h's BMS_ABI) and LAYOUT (the sizes NX, U, CFG, OUT, HEADER, NTAB) let
 * the Python side refuse a module built from other sources (device/bms/ukf_native.py).
 */
#include <math.h>

#include "py/obj.h"
#include "py/runtime.h"

#include "ukf_core.h"
#include "sop_core.h"

#define BMS_LAYOUT_ROM {MP_ROM_INT(BMS_NX), MP_ROM_INT(BMS_U_SIZE), MP_ROM_INT(BMS_CFG_SIZE), \
    MP_ROM_INT(BMS_OUT_SIZE), MP_ROM_INT(BMS_HEADER), MP_ROM_INT(BMS_NTAB)}

#ifdef BMS_REAL_DOUBLE
#define BMS_TYPECODE 'd'
#define BMS_TYPECODE_QSTR MP_QSTR_d
#else
#define BMS_TYPECODE 'f'
#define BMS_TYPECODE_QSTR MP_QSTR_f
#endif

/* Argument k as a buffer of n values of our float type (n == 0: any length). */
static bms_real *real_buf(mp_obj_t obj, const char *name, size_t n, mp_uint_t flags,
                          size_t *len) {
    mp_buffer_info_t bi;
    if (!mp_get_buffer(obj, &bi, flags)) {
        mp_raise_msg_varg(&mp_type_TypeError,
            MP_ERROR_TEXT("%s must be a writable, dense array('%c') or float ndarray, not %s"),
            name, BMS_TYPECODE, mp_obj_get_type_str(obj));
    }
    if (bi.typecode != BMS_TYPECODE) {
        mp_raise_msg_varg(&mp_type_TypeError,
            MP_ERROR_TEXT("%s must hold typecode '%c' values, got '%c'"),
            name, BMS_TYPECODE, bi.typecode);
    }
    *len = bi.len / sizeof(bms_real);
    if (n != 0 && bi.len != n * sizeof(bms_real)) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("%s must have %u values, got %u"),
            name, (unsigned)n, (unsigned)*len);
    }
    return (bms_real *)bi.buf;
}

/* bms_params_check as a MicroPython ValueError (raised: does not return). */
static void check_params(const bms_real *p, size_t n_p) {
    size_t expected = 0;
    int reason = bms_params_check(p, n_p, &expected);
    if (reason == BMS_PARAMS_LENGTH) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("bad params: %s (got %u values, header needs %u)"),
            bms_params_reason(reason), (unsigned)n_p, (unsigned)expected);
    } else if (reason != BMS_PARAMS_OK) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("bad params: %s"),
            bms_params_reason(reason));
    }
}

static mp_obj_t bms_native_ukf_step(size_t n_args, const mp_obj_t *args) {
    size_t len, n_p;
    int status;
    (void)n_args;
    bms_real *x = real_buf(args[0], "x", BMS_NX, MP_BUFFER_RW, &len);
    bms_real *P = real_buf(args[1], "P", BMS_NX * BMS_NX, MP_BUFFER_RW, &len);
    const bms_real *p = real_buf(args[2], "params", 0, MP_BUFFER_READ, &n_p);
    bms_real *cfg = real_buf(args[3], "cfg", BMS_CFG_SIZE, MP_BUFFER_RW, &len);
    const bms_real *u = real_buf(args[4], "u", BMS_U_SIZE, MP_BUFFER_READ, &len);
    bms_real *out = real_buf(args[5], "out", BMS_OUT_SIZE, MP_BUFFER_RW, &len);

    check_params(p, n_p);
    status = bms_ukf_step(x, P, p, n_p, cfg, u, out);
    return MP_OBJ_NEW_SMALL_INT(status);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(bms_native_ukf_step_obj, 6, 6, bms_native_ukf_step);

/* sop(params, x, lim, i_dis, i_chg) -> status: the state of power of one cell for every
 * horizon in lim (sop_core.h); i_dis and i_chg (one value per horizon) in place. */
static mp_obj_t bms_native_sop(size_t n_args, const mp_obj_t *args) {
    size_t len, n_p, nh, n_chg, n_lim;
    int status;
    (void)n_args;
    const bms_real *p = real_buf(args[0], "params", 0, MP_BUFFER_READ, &n_p);
    const bms_real *x = real_buf(args[1], "x", BMS_NX, MP_BUFFER_READ, &len);
    const bms_real *lim = real_buf(args[2], "lim", 0, MP_BUFFER_READ, &n_lim);
    bms_real *i_dis = real_buf(args[3], "i_dis", 0, MP_BUFFER_RW, &nh);
    bms_real *i_chg = real_buf(args[4], "i_chg", 0, MP_BUFFER_RW, &n_chg);
    if (nh < 1 || nh > BMS_SOP_MAX_H || n_chg != nh || n_lim != BMS_SOP_H0 + nh) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("i_dis and i_chg must have one value per horizon (1 to %d) and lim %d values plus the horizons, got %u, %u and %u"),
            BMS_SOP_MAX_H, BMS_SOP_H0, (unsigned)nh, (unsigned)n_chg, (unsigned)n_lim);
    }
    check_params(p, n_p);
    status = bms_sop(p, x, lim, (int)nh, i_dis, i_chg);
    return MP_OBJ_NEW_SMALL_INT(status);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(bms_native_sop_obj, 5, 5, bms_native_sop);

/* A buffer of n items of item_size bytes (bytearray, array('B'/'H'/'f')). */
static void *item_buf(mp_obj_t obj, const char *name, size_t n, size_t item_size) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(obj, &bi, MP_BUFFER_RW);
    int tc = bi.typecode;
    int ok = item_size == 1 ? (tc == 'B' || tc == 'b' || tc == 1)
        : item_size == 2 ? (tc == 'H')
        : (tc == 'f');
    if (!ok || bi.len != n * item_size) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("%s must be a buffer of %u items of %u bytes"),
            name, (unsigned)n, (unsigned)item_size);
    }
    return bi.buf;
}

/* cells(tap_v, tap_st, cell_v, cell_st, last_v, rep_v, odd_v, stacked, lo, hi, hold):
 * the per-cell loop of sensors.Sensors._cells, with the same statuses and counters:
 * tap voltages (array('f')) and statuses (bytearray; OK NaN -> NAN) into cell voltages
 * (stacked: tap k minus tap k-1) and statuses, an implausible reading held for `hold`
 * samples on the last good value, and the run length of identical readings. In C
 * because the loop boxes several floats per cell in MicroPython: at 16 cells, 1.8 KB of
 * heap and ~1.6 ms of the 10 ms fast tick on an RP2040. Statuses: sensors.py. */
#define CELL_OK 0
#define CELL_NAN 2
#define CELL_RANGE 3
#define CELL_OPEN 5
static mp_obj_t bms_native_cells(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    mp_buffer_info_t bi;
    mp_get_buffer_raise(args[0], &bi, MP_BUFFER_READ);
    size_t n = bi.len / sizeof(float);
    const float *tv = item_buf(args[0], "tap_v", n, 4);
    uint8_t *ts = item_buf(args[1], "tap_st", n, 1);
    float *cv = item_buf(args[2], "cell_v", n, 4);
    uint8_t *cst = item_buf(args[3], "cell_st", n, 1);
    float *last = item_buf(args[4], "last_v", n, 4);
    uint16_t *rep = item_buf(args[5], "rep_v", n, 2);
    uint16_t *odd = item_buf(args[6], "odd_v", n, 2);
    int stacked = mp_obj_is_true(args[7]);
    mp_float_t lo = mp_obj_get_float(args[8]);
    mp_float_t hi = mp_obj_get_float(args[9]);
    mp_int_t hold = mp_obj_get_int(args[10]);
    float below = 0.0f;
    int below_st = CELL_OK;
    for (size_t k = 0; k < n; k++) {
        if (ts[k] == CELL_OK && tv[k] != tv[k]) {
            ts[k] = CELL_NAN;
        }
    }
    for (size_t k = 0; k < n; k++) {
        int st = ts[k];
        float t = tv[k];
        if (stacked) {
            if (k) {
                cv[k] = t - below;
                if (below_st && !st) {
                    st = below_st;
                }
            } else {
                cv[k] = t;
            }
            below = t;
            below_st = ts[k];
        } else {
            cv[k] = t;
        }
        float v = cv[k];
        if (st == CELL_OK) {
            if ((mp_float_t)v < lo) {
                st = CELL_OPEN;
            } else if ((mp_float_t)v > hi) {
                st = CELL_RANGE;
            }
            if (st && last[k] != 0.0f && odd[k] < hold) {
                /* a pipelined scan's two taps across a load step: the last good
                 * value stands for up to `hold` samples (sensors.py) */
                odd[k] += 1;
                cv[k] = last[k];
                cst[k] = CELL_OK;
                continue;
            }
        }
        odd[k] = 0;
        if (st == CELL_OK) {
            if (v == last[k]) {
                if (rep[k] < 65535) {
                    rep[k] += 1;
                }
            } else {
                rep[k] = 0;
            }
            last[k] = v;
        } else {
            rep[k] = 0;
        }
        cst[k] = (uint8_t)st;
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(bms_native_cells_obj, 11, 11, bms_native_cells);

/* taps(code, failed, scale, tap_v, tap_st): ads1115.TapBank.read_into without boxing a
 * float per tap: tap_v[k] = code[k] * scale[k] (array('h'), array('f')) and tap_st[k] = 0,
 * or NaN and 1 where failed[k] (bytearray) is set. */
static mp_obj_t bms_native_taps(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    mp_buffer_info_t bi;
    mp_get_buffer_raise(args[0], &bi, MP_BUFFER_READ);
    if (bi.typecode != 'h') {
        mp_raise_ValueError(MP_ERROR_TEXT("code must be an array('h')"));
    }
    size_t n = bi.len / 2;
    const int16_t *code = bi.buf;
    const uint8_t *failed = item_buf(args[1], "failed", n, 1);
    const float *scale = item_buf(args[2], "scale", n, 4);
    float *tv = item_buf(args[3], "tap_v", n, 4);
    uint8_t *ts = item_buf(args[4], "tap_st", n, 1);
    for (size_t k = 0; k < n; k++) {
        if (failed[k]) {
            tv[k] = (float)NAN;
            ts[k] = 1;
        } else {
            tv[k] = (float)code[k] * scale[k];
            ts[k] = 0;
        }
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(bms_native_taps_obj, 5, 5, bms_native_taps);

/* extremes(v, out) -> bool: out[0] = min(v), out[1] = max(v) for an array('f') v of at
 * least one value, True; False (out untouched) when v holds a NaN or both infinities,
 * where protection's per-cell loop must name the faulty cells (protection.py). */
static mp_obj_t bms_native_extremes(mp_obj_t v_in, mp_obj_t out_in) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(v_in, &bi, MP_BUFFER_READ);
    size_t n = bi.len / sizeof(float);
    if (bi.typecode != 'f' || n < 1) {
        mp_raise_ValueError(MP_ERROR_TEXT("v must be an array('f') of at least one value"));
    }
    const float *v = bi.buf;
    float *out = item_buf(out_in, "out", 2, 4);
    float lo = v[0], hi = v[0];
    for (size_t k = 0; k < n; k++) {
        float x = v[k];
        if (x != x) {
            return mp_const_false;
        }
        if (x < lo) {
            lo = x;
        } else if (x > hi) {
            hi = x;
        }
    }
    if (lo == -(float)INFINITY && hi == (float)INFINITY) {
        return mp_const_false;
    }
    out[0] = lo;
    out[1] = hi;
    return mp_const_true;
}
static MP_DEFINE_CONST_FUN_OBJ_2(bms_native_extremes_obj, bms_native_extremes);

/* The sizes of ukf.LAYOUT, as a tuple in ROM. */
static const mp_rom_obj_tuple_t bms_native_layout_obj = {
    {&mp_type_tuple}, BMS_LAYOUT_N, BMS_LAYOUT_ROM
};

static const mp_rom_map_elem_t bms_native_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_bms_native) },
    { MP_ROM_QSTR(MP_QSTR_ukf_step), MP_ROM_PTR(&bms_native_ukf_step_obj) },
    { MP_ROM_QSTR(MP_QSTR_sop), MP_ROM_PTR(&bms_native_sop_obj) },
    { MP_ROM_QSTR(MP_QSTR_cells), MP_ROM_PTR(&bms_native_cells_obj) },
    { MP_ROM_QSTR(MP_QSTR_taps), MP_ROM_PTR(&bms_native_taps_obj) },
    { MP_ROM_QSTR(MP_QSTR_extremes), MP_ROM_PTR(&bms_native_extremes_obj) },
    { MP_ROM_QSTR(MP_QSTR_ABI), MP_ROM_INT(BMS_ABI) },
    { MP_ROM_QSTR(MP_QSTR_LAYOUT), MP_ROM_PTR(&bms_native_layout_obj) },
    { MP_ROM_QSTR(MP_QSTR_SOP_LIM_BASE), MP_ROM_INT(BMS_SOP_H0) },
    { MP_ROM_QSTR(MP_QSTR_TYPECODE), MP_ROM_QSTR(BMS_TYPECODE_QSTR) },
    { MP_ROM_QSTR(MP_QSTR_REAL_SIZE), MP_ROM_INT(sizeof(bms_real)) },
    { MP_ROM_QSTR(MP_QSTR_NX), MP_ROM_INT(BMS_NX) },
    { MP_ROM_QSTR(MP_QSTR_CFG_SIZE), MP_ROM_INT(BMS_CFG_SIZE) },
    { MP_ROM_QSTR(MP_QSTR_U_SIZE), MP_ROM_INT(BMS_U_SIZE) },
    { MP_ROM_QSTR(MP_QSTR_OUT_SIZE), MP_ROM_INT(BMS_OUT_SIZE) },
    { MP_ROM_QSTR(MP_QSTR_OK), MP_ROM_INT(BMS_OK) },
    { MP_ROM_QSTR(MP_QSTR_ERR_NONFINITE), MP_ROM_INT(BMS_ERR_NONFINITE) },
    { MP_ROM_QSTR(MP_QSTR_ERR_NOT_PD), MP_ROM_INT(BMS_ERR_NOT_PD) },
};
static MP_DEFINE_CONST_DICT(bms_native_globals, bms_native_globals_table);

const mp_obj_module_t bms_native_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&bms_native_globals,
};

MP_REGISTER_MODULE(MP_QSTR_bms_native, bms_native_user_cmodule);
