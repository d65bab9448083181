/*
 * CPython binding of the UKF core, so the `native` backend runs and is tested on a PC.
 * Built twice by setup.py: `bms_native` (float32, like the boards) and `bms_native_f64`
 * (-DBMS_REAL_DOUBLE). Same function and checks as the MicroPython module:
 *
 *   ukf_step(x, P, params, cfg, u, out) -> int status
 *   sop(params, x, lim, i_dis, i_chg) -> int status    (state of power, sop_core.h)
 *
 * All six arguments are C-contiguous buffers of the build's float type (array('f') or a
 * numpy float32 array; 'd' / float64 in the double build); x, P, cfg, out are updated in
 * place. u: the step's inputs (ukf_core.h's BMS_U_*). ABI and LAYOUT as in the
 * MicroPython module (modbms_native.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ukf_core.h"
#include "sop_core.h"

#ifdef BMS_REAL_DOUBLE
#define MOD_NAME "bms_native_f64"
#define MOD_INIT PyInit_bms_native_f64
#define TYPECODE 'd'
#define TYPE_DESC "float64 (array('d') or numpy float64)"
#else
#define MOD_NAME "bms_native"
#define MOD_INIT PyInit_bms_native
#define TYPECODE 'f'
#define TYPE_DESC "float32 (array('f') or numpy float32)"
#endif

/* The struct format of a buffer is our float type: "f", "<f", "=f" or "@f" (native
 * byte order on a little-endian host). */
static int format_ok(const char *fmt) {
    if (fmt == NULL) {
        return 0;
    }
    if (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == '<') {
        fmt++;
    }
    return fmt[0] == TYPECODE && fmt[1] == '\0';
}

/* Acquire argument `name` as a contiguous buffer of n values. Returns 0 and sets a
 * TypeError or ValueError that says what was wrong on failure. */
static int get_real_buf(PyObject *obj, const char *name, Py_ssize_t n, int writable,
                        Py_buffer *view) {
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s buffer, not %.100s", name, TYPE_DESC,
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        /* Keep CPython's own reason (not contiguous, read-only) in the message. */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *value = PyErr_GetRaisedException();
#else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
#endif
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s %s buffer (%S)", name,
                     writable ? ", writable" : "", TYPE_DESC, value ? value : Py_None);
        Py_XDECREF(value);
        return 0;
    }
    if (view->itemsize != (Py_ssize_t)sizeof(bms_real) || !format_ok(view->format)) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s values, got format '%s'", name,
                     TYPE_DESC, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return 0;
    }
    if (n >= 0 && view->len != n * (Py_ssize_t)sizeof(bms_real)) {
        PyErr_Format(PyExc_ValueError, "%s must have %zd values, got %zd", name, n,
                     view->len / (Py_ssize_t)sizeof(bms_real));
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

/* bms_params_check as a Python error: 1 when params is usable, else 0 with ValueError. */
static int params_ok(const bms_real *p, size_t n_p) {
    size_t expected = 0;
    int reason = bms_params_check(p, n_p, &expected);
    if (reason == BMS_PARAMS_OK) {
        return 1;
    }
    if (reason == BMS_PARAMS_LENGTH) {
        PyErr_Format(PyExc_ValueError, "bad params: %s (got %zu values, header needs %zu)",
                     bms_params_reason(reason), n_p, expected);
    } else {
        PyErr_Format(PyExc_ValueError, "bad params: %s", bms_params_reason(reason));
    }
    return 0;
}

static PyObject *ukf_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    static const char *names[6] = {"x", "P", "params", "cfg", "u", "out"};
    static const Py_ssize_t sizes[6] = {
        BMS_NX, BMS_NX * BMS_NX, -1, BMS_CFG_SIZE, BMS_U_SIZE, BMS_OUT_SIZE
    };
    static const int writable[6] = {1, 1, 0, 1, 0, 1};
    Py_buffer views[6];
    int k, got = 0, status = -1;
    size_t n_p;
    (void)self;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "ukf_step(x, P, params, cfg, u, out) takes 6 arguments, got %zd", nargs);
        return NULL;
    }
    for (k = 0; k < 6; k++) {
        if (!get_real_buf(args[k], names[k], sizes[k], writable[k], &views[k])) {
            goto done;
        }
        got++;
    }
    n_p = (size_t)(views[2].len / (Py_ssize_t)sizeof(bms_real));
    if (!params_ok((const bms_real *)views[2].buf, n_p)) {
        goto done;
    }
    status = bms_ukf_step((bms_real *)views[0].buf, (bms_real *)views[1].buf,
                          (const bms_real *)views[2].buf, n_p, (bms_real *)views[3].buf,
                          (const bms_real *)views[4].buf, (bms_real *)views[5].buf);
done:
    for (k = 0; k < got; k++) {
        PyBuffer_Release(&views[k]);
    }
    if (status < 0) {
        return NULL;
    }
    return PyLong_FromLong(status);
}

/* sop(params, x, lim, i_dis, i_chg) -> status: state of power (sop_core.h), i_dis and
 * i_chg (one value per horizon in lim) written in place. */
static PyObject *sop(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    static const char *names[5] = {"params", "x", "lim", "i_dis", "i_chg"};
    static const Py_ssize_t sizes[5] = {-1, BMS_NX, -1, -1, -1};
    static const int writable[5] = {0, 0, 0, 1, 1};
    Py_buffer views[5];
    int k, got = 0, status = -1;
    size_t n_p;
    Py_ssize_t nh;
    (void)self;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "sop(params, x, lim, i_dis, i_chg) takes 5 arguments, got %zd", nargs);
        return NULL;
    }
    for (k = 0; k < 5; k++) {
        if (!get_real_buf(args[k], names[k], sizes[k], writable[k], &views[k])) {
            goto done;
        }
        got++;
    }
    nh = views[3].len / (Py_ssize_t)sizeof(bms_real);
    if (nh < 1 || nh > BMS_SOP_MAX_H || views[4].len != views[3].len
        || views[2].len != (BMS_SOP_H0 + nh) * (Py_ssize_t)sizeof(bms_real)) {
        PyErr_Format(PyExc_ValueError,
                     "i_dis and i_chg must have one value per horizon (1 to %d) and lim %d "
                     "values plus the horizons, got %zd, %zd and %zd", BMS_SOP_MAX_H,
                     BMS_SOP_H0, nh, views[4].len / (Py_ssize_t)sizeof(bms_real),
                     views[2].len / (Py_ssize_t)sizeof(bms_real));
        goto done;
    }
    n_p = (size_t)(views[0].len / (Py_ssize_t)sizeof(bms_real));
    if (!params_ok((const bms_real *)views[0].buf, n_p)) {
        goto done;
    }
    status = bms_sop((const bms_real *)views[0].buf, (const bms_real *)views[1].buf,
                     (const bms_real *)views[2].buf, (int)nh, (bms_real *)views[3].buf,
                     (bms_real *)views[4].buf);
done:
    for (k = 0; k < got; k++) {
        PyBuffer_Release(&views[k]);
    }
    if (status < 0) {
        return NULL;
    }
    return PyLong_FromLong(status);
}

static PyMethodDef methods[] = {
    {"ukf_step", (PyCFunction)(void (*)(void))ukf_step, METH_FASTCALL,
     "ukf_step(x, P, params, cfg, u, out) -> status: one UKF step, arrays updated in place"},
    {"sop", (PyCFunction)(void (*)(void))sop, METH_FASTCALL,
     "sop(params, x, lim, i_dis, i_chg) -> status: state of power, i_dis/i_chg in place"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, MOD_NAME,
    "The BMS filter step in C (the `native` backend), host build.", -1, methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC MOD_INIT(void) {
    static const int layout[BMS_LAYOUT_N] = BMS_LAYOUT;
    PyObject *m = PyModule_Create(&module), *t;
    char tc[2] = {TYPECODE, '\0'};
    int k;
    if (m == NULL) {
        return NULL;
    }
    t = PyTuple_New(BMS_LAYOUT_N);
    for (k = 0; t != NULL && k < BMS_LAYOUT_N; k++) {
        PyTuple_SET_ITEM(t, k, PyLong_FromLong(layout[k]));
    }
    /* PyModule_AddObject steals the tuple's reference on success only */
    if (t == NULL || PyModule_AddObject(m, "LAYOUT", t) < 0) {
        Py_XDECREF(t);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ABI", BMS_ABI) < 0
        || PyModule_AddIntConstant(m, "REAL_SIZE", (long)sizeof(bms_real)) < 0
        || PyModule_AddStringConstant(m, "TYPECODE", tc) < 0
        || PyModule_AddIntConstant(m, "NX", BMS_NX) < 0
        || PyModule_AddIntConstant(m, "CFG_SIZE", BMS_CFG_SIZE) < 0
        || PyModule_AddIntConstant(m, "U_SIZE", BMS_U_SIZE) < 0
        || PyModule_AddIntConstant(m, "OUT_SIZE", BMS_OUT_SIZE) < 0
        || PyModule_AddIntConstant(m, "SOP_LIM_BASE", BMS_SOP_H0) < 0
        || PyModule_AddIntConstant(m, "OK", BMS_OK) < 0
        || PyModule_AddIntConstant(m, "ERR_NONFINITE", BMS_ERR_NONFINITE) < 0
        || PyModule_AddIntConstant(m, "ERR_NOT_PD", BMS_ERR_NOT_PD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
