/*
 * Float helpers shared by the C cores (ukf_core.c, sop_core.c): the maths functions, bit
 * tests that replace float compares, and the hot loops' add, subtract and multiply.
 *
 * On a Cortex-M0+ (RP2040) every float operation is a library call; in the RP2040
 * MicroPython firmware these helpers call the boot ROM's routines directly (see
 * BMS_ROM_ARITH below). Elsewhere they are the plain C operators and libm functions.
 * A float32 build does every operation in single precision (no double promotion).
 */
#ifndef BMS_FLOAT_H
#define BMS_FLOAT_H

#include "ukf_core.h"

#include <math.h>
#include <stdint.h>

#ifdef BMS_REAL_DOUBLE
#define BMS_EXP(v) exp(v)
#define BMS_SQRT(v) sqrt(v)
#define BMS_LOG(v) log(v)
typedef uint64_t bms_bits;   /* the bit pattern of a bms_real */
typedef int64_t bms_key;     /* a signed key that orders like the value */
#define SIGN_BIT ((bms_bits)1 << 63)
#define INF_BITS ((bms_bits)0x7ff0000000000000u)
#else
#if defined(PICO_RP2040) && defined(LIB_PICO_FLOAT_MICROPYTHON) && !defined(BMS_LIBM_MATH)
/* MicroPython's RP2040 firmware links its own software expf/logf/sqrtf, built on the
 * float calls (about 2200, 2200 and 400-700 cycles); the boot ROM's (about 540, 820,
 * 80), which the Pico SDK's float code in the same image enters as __wrap_expf,
 * __wrap_logf and __wrap_sqrtf, save ~0.6 ms per filter step (26 logs, 18 exps, 33 roots).
 * Build with -DBMS_LIBM_MATH to keep the libm ones. */
float __wrap_expf(float v);
float __wrap_logf(float v);
float __wrap_sqrtf(float v);
#define BMS_EXP(v) __wrap_expf(v)
#define BMS_SQRT(v) __wrap_sqrtf(v)
#define BMS_LOG(v) __wrap_logf(v)
/* The same firmware sends each float add through MicroPython's inf-fixing
 * __aeabi_fadd, then (like subtracts and multiplies) through the SDK's NaN-propagating
 * wrapper, before the boot ROM routine does the work. The hot loops' add, subtract and
 * multiply (f_add, f_sub, f_mul below) call the ROM routine itself, through the SDK's
 * copy of the ROM table: the same routine, so finite operands give the same bits. Only
 * IEEE special values differ (the ROM gives an infinity where the wrappers give a NaN);
 * every result is checked for finiteness before it is committed, so such a step is still
 * refused and never stored. */
#include "pico/bootrom/sf_table.h"
#define BMS_ROM_ARITH 1
extern uint32_t sf_table[];
typedef float (*bms_rom_f2)(float, float);
#define ROM_F2(offset) ((bms_rom_f2)sf_table[(offset) / 4])
#else
#define BMS_EXP(v) expf(v)
#define BMS_SQRT(v) sqrtf(v)
#define BMS_LOG(v) logf(v)
#endif
typedef uint32_t bms_bits;
typedef int32_t bms_key;
#define SIGN_BIT ((bms_bits)1 << 31)
#define INF_BITS ((bms_bits)0x7f800000u)
#endif

/* A literal in the working precision, rounded once at compile time. */
#define BMS_C(v) ((bms_real)(v))

/* ---- float tests on the bits --------------------------------------------------- */

/* These few integer operations replace a float library call each: always inline them
 * (-Os would otherwise call them). */
#if defined(__GNUC__)
#define BMS_BITS_FN static inline __attribute__((always_inline))
#else
#define BMS_BITS_FN static inline
#endif

BMS_BITS_FN bms_bits bits_of(bms_real v) {
    union {
        bms_real r;
        bms_bits b;
    } u;
    u.r = v;
    return u.b;
}

/* |v|'s bit pattern: ordered like |v| for every value, NaN above infinity. */
BMS_BITS_FN bms_bits mag_bits(bms_real v) {
    return bits_of(v) & ~SIGN_BIT;
}

BMS_BITS_FN int is_nan(bms_real v) {
    return mag_bits(v) > INF_BITS;
}

/* For non-NaN a, b: a < b exactly when order_key(a) < order_key(b) (+0 == -0). */
BMS_BITS_FN bms_key order_key(bms_real v) {
    bms_bits b = bits_of(v);
    bms_key m = (bms_key)(b & ~SIGN_BIT);
    return (b & SIGN_BIT) ? -m : m;
}

/* v >= 0 for non-NaN v (-0 included). */
BMS_BITS_FN int non_negative(bms_real v) {
    return !(bits_of(v) & SIGN_BIT) || mag_bits(v) == 0;
}

/* Finite and of sane size: v == v && -1e30 < v < 1e30, without a float compare. */
BMS_BITS_FN int bms_finite(bms_real v) {
    return mag_bits(v) < mag_bits(BMS_C(1e30));
}

/* -v by its sign bit (no float subtract). */
BMS_BITS_FN bms_real negated(bms_real v) {
    union {
        bms_real r;
        bms_bits b;
    } u;
    u.r = v;
    u.b ^= SIGN_BIT;
    return u.r;
}

/* ---- hot-loop arithmetic ---------------------------------------------------------- */

/* a + b, a - b, a * b in the loops that do most of the step's float operations. They are
 * the plain C operators (the reference), except in the RP2040 firmware, where they call
 * the ROM directly (see BMS_ROM_ARITH above: ~0.5 ms less per filter step, ~0.4 ms
 * per SOP call). */
#ifdef BMS_ROM_ARITH
BMS_BITS_FN bms_real f_add(bms_real a, bms_real b) {
    return ROM_F2(SF_TABLE_FADD)(a, b);
}
BMS_BITS_FN bms_real f_sub(bms_real a, bms_real b) {
    return ROM_F2(SF_TABLE_FSUB)(a, b);
}
BMS_BITS_FN bms_real f_mul(bms_real a, bms_real b) {
    return ROM_F2(SF_TABLE_FMUL)(a, b);
}
#else
BMS_BITS_FN bms_real f_add(bms_real a, bms_real b) {
    return a + b;
}
BMS_BITS_FN bms_real f_sub(bms_real a, bms_real b) {
    return a - b;
}
BMS_BITS_FN bms_real f_mul(bms_real a, bms_real b) {
    return a * b;
}
#endif

/* acc + a * b (rounded twice, as the C expression without contraction) */
BMS_BITS_FN bms_real f_madd(bms_real acc, bms_real a, bms_real b) {
    return f_add(acc, f_mul(a, b));
}

#endif
