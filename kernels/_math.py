"""Scalar math shared by the Numba CPU kernels: a vectorisable exp and max.

Numba's scalar ``math.exp`` calls libm once per element (no SVML here), which keeps LLVM from
vectorising the loop around it; this polynomial exp is branch-free straight-line code, so a
loop of them becomes AVX2 code.  Range reduction (Cody & Waite 1980):

    exp(x) = 2^k exp(r),  k = round(x / ln 2),  r = x - k ln 2 in [-ln2/2, ln2/2].

k is rounded by the shifter trick: s = fma(x, 1/ln 2, 1.5 * 2^52) holds round(x / ln 2) in
its low mantissa bits, k = s - 1.5 * 2^52 (Muller 2016, "Elementary Functions", ch. 11).
r = fma(-k, ln2_hi, x), then r = fma(-k, ln2_lo, r): ln 2 split into fdlibm's high and low
parts, each step a single rounding.  The fused multiply-adds are LLVM ``llvm.fma`` calls,
which the fast-math reassociation the kernels compile with (to vectorise sums) cannot
rearrange, so neither the shifter nor the two-part ln 2 is folded away.  exp(r) is a degree-10
polynomial (Horner; coefficients below); 2^k multiplies it by adding k << 52 to its IEEE bits,
taken from the shifter's bits (no float -> int64 conversion, which AVX2 lacks in packed form
and would scalarise the loop).  Valid for every x: 0 below -708 (the results there would be
subnormal; flushed to 0), +inf above 709.78 and for x = +inf, 0 for x = -inf, NaN for NaN
(selects, not branches, so the loop still vectorises).  A float32 twin (degree 6, 8 lanes)
serves float32 rows; ``exp`` picks by the argument's type.

Everything here compiles with ``_dispatch.FASTMATH``, which keeps NaN and infinity semantics
(the selects above rely on ``x == x``).  Numba's on-disk cache sees edits here through
``_dispatch.source_hash``.
"""
import math

import numpy as np

from ._dispatch import FASTMATH, both, lazy_built, materialize

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01       # fdlibm's split of ln 2
LN2_LO = 1.90821492927058770002e-10
SHIFTER = 1.5 * 2.0 ** 52                 # s = x + SHIFTER rounds x to an integer, kept in s's bits
EXP_MIN = -708.0                          # exp(-708) ~ 3e-308, the smallest normal scale
EXP_SPLIT = 709.0                         # above it 2^k overflows p's exponent: use 2 * 2^(k-1)
EXP_MAX = 709.782712893384                # log(largest float64); above it exp is +inf
# exp(r) on |r| <= 1.00001 ln2/2: degree 10, from one Remez step (Remez 1934): the relative
# error made to equioscillate at the 12 Chebyshev extrema of the interval, solved in
# np.longdouble (|E| = 2.1e-16), coefficients rounded to float64 (max relative error then
# 3.3e-16 evaluated exactly at 10^6 + 1 points).  The whole exp in Numba, against np.exp on
# [-708, 0] (2 * 10^6 points): max 4.7e-16 = 2.1 ulp (tests/kernels/test_dispatch.py asserts
# < 4 ulp).  Degree 11 measured 1.0 ulp but costs one more FMA per exp.
POLY = (1.0, 1.0000000000000067, 0.499999999999973, 0.1666666666655618, 0.04166666666841112, 0.008333333385136109, 0.0013888888503641368, 0.00019841170860271354, 2.4801912659890044e-05, 2.7639962692255188e-06, 2.749031219323039e-07)


# float32: 8 lanes per AVX2 register.  Degree 6 by the same Chebyshev fit, coefficients
# rounded to float32 (max relative error 2.0e-8 < 2^-24 evaluated exactly).
F32 = np.float32
LOG2E_F32, ZERO_F32, ONE_F32 = F32(LOG2E), F32(0.0), F32(1.0)
LN2_HI_F32 = F32(45426 / 65536)
LN2_LO_F32 = F32(math.log(2) - 45426 / 65536)
SHIFTER_F32 = F32(1.5 * 2.0 ** 23)
EXP_MIN_F32 = F32(-87.0)                  # exp(-87) ~ 1.6e-38, the smallest normal float32
EXP_SPLIT_F32 = F32(88.0)
EXP_MAX_F32 = F32(88.72283)               # log(largest float32), rounded down
TWO_F32, INF_F32 = F32(2.0), F32(np.inf)
POLY_F32 = tuple(F32(c) for c in (1.0, 1.0, 0.5, 0.16666415333747864, 0.04166635125875473,
                                  0.008375134319067001, 0.0013941118959337473))


def _float_ir(ty):
    """(LLVM float type, integer type of its bits, mantissa bits, exponent bias) for ty."""
    from llvmlite import ir
    from numba import types
    if ty == types.float32:
        return ir.FloatType(), ir.IntType(32), 23, 127
    return ir.DoubleType(), ir.IntType(64), 52, 1023


@lazy_built("cpu")
def _scale():
    """Numba intrinsic: p * 2^k for the shifter s = k + SHIFTER (float32 or float64), as an
    integer add on p's IEEE bits, valid while p * 2^k stays normal.

    bits(s) = bits(SHIFTER) + k and the low p bits of bits(SHIFTER) are 2^(p-1) (p = 52 or 23
    mantissa bits): shifting bits(s) left by p leaves k << p, the exponent increment.
    """
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def scale(typingctx, p, s):
        ty = types.float32 if p == s == types.float32 else types.float64

        def codegen(context, builder, signature, args):
            fty, ity, bits, _ = _float_ir(ty)
            inc = builder.shl(builder.bitcast(args[1], ity), ir.Constant(ity, bits))
            return builder.bitcast(builder.add(builder.bitcast(args[0], ity), inc), fty)
        return ty(ty, ty), codegen

    return scale


@lazy_built("cpu")
def _fma():
    """Numba intrinsic: a * b + c with one rounding, as LLVM's ``llvm.fma`` (float32 if all
    three are, else float64).  Fast-math reassociation does not rewrite across it."""
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def fma(typingctx, a, b, c):
        ty = types.float32 if a == b == c == types.float32 else types.float64

        def codegen(context, builder, signature, args):
            fty = _float_ir(ty)[0]
            fn = builder.module.declare_intrinsic("llvm.fma", [fty],
                                                  ir.FunctionType(fty, [fty, fty, fty]))
            return builder.call(fn, args)
        return ty(ty, ty, ty), codegen

    return fma


@lazy_built("cpu")
def fmax():
    """Numba intrinsic: max(a, b) as LLVM's maxnum (float32 if both are, else float64), which
    the loop vectoriser turns into a packed max reduction (Numba's ``max`` lowers to
    compare-and-branch code that it does not).  maxnum returns the other operand when one is
    NaN: a kernel using it for a shift must let NaN reach its sum some other way."""
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def maxnum(typingctx, a, b):
        ty = types.float32 if a == b == types.float32 else types.float64

        def codegen(context, builder, signature, args):
            fty = _float_ir(ty)[0]
            fn = builder.module.declare_intrinsic("llvm.maxnum", [fty],
                                                  ir.FunctionType(fty, [fty, fty]))
            return builder.call(fn, args)
        return ty(ty, ty), codegen

    return maxnum


def exp_f64(x):
    """exp(x) to ~2 ulp for -708 <= x <= 709.78; 0 below, +inf above, NaN for NaN."""
    s = _fma(x, LOG2E, SHIFTER)
    k = s - SHIFTER
    r = _fma(-k, LN2_HI, x)
    r = _fma(-k, LN2_LO, r)
    p = POLY[10]
    p = p * r + POLY[9]
    p = p * r + POLY[8]
    p = p * r + POLY[7]
    p = p * r + POLY[6]
    p = p * r + POLY[5]
    p = p * r + POLY[4]
    p = p * r + POLY[3]
    p = p * r + POLY[2]
    p = p * r + POLY[1]
    p = p * r + POLY[0]
    big = _scale(p, s - 1.0) * 2.0 if x <= EXP_MAX else math.inf
    y = _scale(p, s) if x <= EXP_SPLIT else big
    y = y if x >= EXP_MIN else 0.0
    return y if x == x else x


def exp_nonpositive_f64(x):
    """``exp_f64`` for x <= 0 (or NaN): two selects instead of four."""
    s = _fma(x, LOG2E, SHIFTER)
    k = s - SHIFTER
    r = _fma(-k, LN2_HI, x)
    r = _fma(-k, LN2_LO, r)
    p = POLY[10]
    p = p * r + POLY[9]
    p = p * r + POLY[8]
    p = p * r + POLY[7]
    p = p * r + POLY[6]
    p = p * r + POLY[5]
    p = p * r + POLY[4]
    p = p * r + POLY[3]
    p = p * r + POLY[2]
    p = p * r + POLY[1]
    p = p * r + POLY[0]
    y = _scale(p, s) if x >= EXP_MIN else 0.0
    return y if x == x else x


def exp_f32(x):
    """exp(x) in float32 to ~1 ulp for -87 <= x <= 88.72; 0 below, +inf above, NaN for NaN."""
    s = _fma(x, LOG2E_F32, SHIFTER_F32)
    k = s - SHIFTER_F32
    r = _fma(-k, LN2_HI_F32, x)
    r = _fma(-k, LN2_LO_F32, r)
    p = POLY_F32[6]
    p = p * r + POLY_F32[5]
    p = p * r + POLY_F32[4]
    p = p * r + POLY_F32[3]
    p = p * r + POLY_F32[2]
    p = p * r + POLY_F32[1]
    p = p * r + POLY_F32[0]
    big = _scale(p, s - ONE_F32) * TWO_F32 if x <= EXP_MAX_F32 else INF_F32
    y = _scale(p, s) if x <= EXP_SPLIT_F32 else big
    y = y if x >= EXP_MIN_F32 else ZERO_F32
    return y if x == x else x


def exp_nonpositive_f32(x):
    """``exp_f32`` for x <= 0 (or NaN): two selects instead of four."""
    s = _fma(x, LOG2E_F32, SHIFTER_F32)
    k = s - SHIFTER_F32
    r = _fma(-k, LN2_HI_F32, x)
    r = _fma(-k, LN2_LO_F32, r)
    p = POLY_F32[6]
    p = p * r + POLY_F32[5]
    p = p * r + POLY_F32[4]
    p = p * r + POLY_F32[3]
    p = p * r + POLY_F32[2]
    p = p * r + POLY_F32[1]
    p = p * r + POLY_F32[0]
    y = _scale(p, s) if x >= EXP_MIN_F32 else ZERO_F32
    return y if x == x else x


def exp_nonpositive(x):
    """exp(x) for x <= 0 or NaN (log-sum-exp shifts), in x's precision; 1.5x faster than
    ``exp`` in a vectorised loop (measured), since it needs no overflow selects."""
    return math.exp(x)


def exp(x):
    """exp(x) in x's precision: ``exp_f32`` for float32, else ``exp_f64``.  Plain Python
    here; Numba compiles the overload below."""
    return math.exp(x)


_REGISTERED = []


def _register_exps():
    """Register the Numba overloads of ``exp`` and ``exp_nonpositive`` (once)."""
    if _REGISTERED:
        return
    _REGISTERED.append(True)
    import numba
    materialize(globals(), "cpu")
    for generic, f64, f32 in ((exp, exp_f64, exp_f32),
                              (exp_nonpositive, exp_nonpositive_f64, exp_nonpositive_f32)):
        _overload_by_type(generic, numba.njit(inline="always", fastmath=FASTMATH)(f64),
                          numba.njit(inline="always", fastmath=FASTMATH)(f32))


@lazy_built("cpu")
def exp_cpu():
    """``exp`` with its Numba overload registered (inlined, chosen by the argument's type)."""
    _register_exps()
    return exp


@lazy_built("cpu")
def exp_nonpositive_cpu():
    """``exp_nonpositive`` with its Numba overload registered."""
    _register_exps()
    return exp_nonpositive


def _overload_by_type(generic, e64, e32):
    from numba import types
    from numba.extending import overload

    @overload(generic, inline="always", fastmath=FASTMATH)
    def _exp(x):
        if x == types.float32:
            return lambda x: e32(x)
        return lambda x: e64(x)


# ------------------------------------------------------------------ online log-sum-exp
# Written once, compiled for the CPU and for CUDA (``both``); softmax and KDE share them.
def lse_push(M, S, v):
    """Online log-sum-exp (Milakov & Gimelshein 2018): the (M, S) with S exp(M) = sum of
    exp(v) over the values seen, after one more v.  NaN reaches S; -inf adds nothing; +inf
    gives M = inf (S counts the +inf values)."""
    if v > M:
        S = S * math.exp(M - v) + 1.0
        M = v
    elif v == M:
        if v != -math.inf:
            S += 1.0
    elif v != -math.inf:
        S += math.exp(v - M)
    return M, S


def lse_value(M, S):
    """log(S exp(M)): -inf for an empty sum (S = 0), NaN if S is NaN."""
    return M + math.log(S) if S > 0.0 else (-math.inf if S == 0.0 else S)


def reciprocal(S):
    """1 / S, and NaN for S = 0 (a normaliser of nothing: 0 / 0, as in the references)."""
    return 1.0 / S if S != 0.0 else math.nan


lse_push_cpu, lse_push_gpu = both(lse_push)
lse_value_cpu, lse_value_gpu = both(lse_value)
reciprocal_cpu, reciprocal_gpu = both(reciprocal)
