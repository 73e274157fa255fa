"""Scalar math shared by the Numba CPU kernels: a vectorisable exp and max.

Numba's scalar ``math.exp`` calls libm once per element (no SVML here), which keeps LLVM from
vectorising the loop around it; this polynomial exp is branch-free straight-line code, so a
loop of them becomes AVX2 code.  Range reduction (Cody & Waite 1980):

    exp(x) = 2^k exp(r),  k = round(x / ln 2),  r = x - k ln 2 in [-ln2/2, ln2/2],

ln 2 split into a high part (k ln2_hi is exact for |k| < 2^21) and a low part, whose
correction is applied as a factor exp(-k ln2_lo) ~ 1 - t + t^2/2 with t = k ln2_lo < 2e-7
(error < t^3/6 ~ 1e-21) rather than subtracted from r, so that reassociation (the kernels
compile with it, to vectorise sums) cannot fold the two parts of ln 2 back together; exp(r)
is its Taylor polynomial of degree 12 (remainder |r|^13 / 13! < 2e-16 relative); 2^k is
built from its IEEE bits ((k + 1023) << 52), reading the integer k out of the mantissa of k + 1.5 * 2^52 rather
than converting float -> int64 (AVX2 has no packed form of that conversion, so it would
scalarise the loop).  Used for x <= 0 only (log-sum-exp shifts), it returns 0 below -708.
"""
import math

import numpy as np

from ._dispatch import lazy_built, lazy_njit

# Fast-math flags that keep infinities meaningful (-inf is a legal log-weight): reassociation
# (vectorised sums), no NaNs (vectorised max; inputs must be NaN-free), contraction (FMA),
# no signed zeros, reciprocal approximations.  Never "ninf".
FASTMATH = {"reassoc", "nnan", "contract", "nsz", "arcp"}

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01       # fdlibm's split of ln 2
LN2_LO = 1.90821492927058770002e-10
EXP_MIN = -708.0                          # exp(-708) ~ 3e-308, the smallest normal scale
TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13))


@lazy_built("cpu")
def _pow2():
    """Numba intrinsic: 2.0 ** k for an integer-valued float64 k in [-1022, 1023].

    bits(k + 1.5 * 2^52) = bits(1.5 * 2^52) + k; adding 1023 and shifting left by 52 drops the
    constant's high bits and leaves the biased exponent k + 1023.  The fadd is emitted without
    fast-math flags, so it is never folded away.
    """
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def pow2(typingctx, k):
        def codegen(context, builder, signature, args):
            i64, f64 = ir.IntType(64), ir.DoubleType()
            shifted = builder.fadd(args[0], ir.Constant(f64, 6755399441055744.0))
            bits = builder.add(builder.bitcast(shifted, i64), ir.Constant(i64, 1023))
            return builder.bitcast(builder.shl(bits, ir.Constant(i64, 52)), f64)
        return types.float64(types.float64), codegen

    return pow2


@lazy_built("cpu")
def fmax():
    """Numba intrinsic: max(a, b) as LLVM's maxnum, which the loop vectoriser turns into a
    packed max reduction (Numba's ``max`` lowers to compare-and-branch code that it does not)."""
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def maxnum(typingctx, a, b):
        def codegen(context, builder, signature, args):
            f64 = ir.DoubleType()
            fn = builder.module.declare_intrinsic("llvm.maxnum", [f64],
                                                  ir.FunctionType(f64, [f64, f64]))
            return builder.call(fn, args)
        return types.float64(types.float64, types.float64), codegen

    return maxnum


def exp_nonpositive(x):
    """exp(x) for x <= 0 to ~2e-16 relative; exactly 0 for x < -708 (and for x = -inf)."""
    xc = max(x, EXP_MIN)
    k = np.floor(xc * LOG2E + 0.5)
    r = xc - k * LN2_HI
    t = k * LN2_LO
    p = TAYLOR[12]
    p = p * r + TAYLOR[11]
    p = p * r + TAYLOR[10]
    p = p * r + TAYLOR[9]
    p = p * r + TAYLOR[8]
    p = p * r + TAYLOR[7]
    p = p * r + TAYLOR[6]
    p = p * r + TAYLOR[5]
    p = p * r + TAYLOR[4]
    p = p * r + TAYLOR[3]
    p = p * r + TAYLOR[2]
    p = p * r + TAYLOR[1]
    p = p * r + TAYLOR[0]
    e = (p * (1.0 - t + 0.5 * t * t)) * _pow2(k)
    return e if x >= EXP_MIN else 0.0


exp_cpu = lazy_njit(inline="always", fastmath=FASTMATH)(exp_nonpositive)
