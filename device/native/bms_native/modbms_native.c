/*
 * MicroPython user C module `bms_native`: the UKF filter step of device/bms/ukf.py in C.
 *
 *   bms_native.ukf_step(x, P, params, cfg, u, out) -> int status
 *   bms_native.sop(params, x, lim, i_dis, i_chg) -> int status   (state of power, sop_core.h)
 *
 * All six arguments come in through the buffer protocol: array('f') or dense float ulab
 * ndarrays (typecode 'd' instead in a -DBMS_REAL_DOUBLE build). x (6), P (36), cfg (12)
 * and out (5) are updated in place; params (flat, model.py layout) and u (5:
 * i_a, ta_c, dt_s, v_meas, ts_meas) are read. Nothing is allocated per step; the
 * workspace lives on the C stack. Status: 0 ok, 1 non-finite, 2 not positive definite.
 */
#include "py/obj.h"
#include "py/runtime.h"

#include "ukf_core.h"
#include "sop_core.h"

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

static const mp_rom_map_elem_t bms_native_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_bms_native) },
    { MP_ROM_QSTR(MP_QSTR_ukf_step), MP_ROM_PTR(&bms_native_ukf_step_obj) },
    { MP_ROM_QSTR(MP_QSTR_sop), MP_ROM_PTR(&bms_native_sop_obj) },
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
