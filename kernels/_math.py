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
A float32 twin (degree 7, 8 lanes) serves float32 rows; ``exp`` picks by the argument's type.

Numba's on-disk cache (``cache=True``) keys each kernel on its own source file only: after
editing this file, delete kernels/__pycache__/*.nbi and *.nbc, or kernels keep the old code.
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


# float32: 8 lanes per AVX2 register; degree 7 (remainder 0.347^8 / 8! < 6e-9 < 2^-24);
# ln2_hi has 16 significant bits so k ln2_hi is exact for |k| < 2^8.
F32 = np.float32
LOG2E_F32, HALF_F32, ONE_F32, ZERO_F32 = F32(LOG2E), F32(0.5), F32(1.0), F32(0.0)
LN2_HI_F32 = F32(45426 / 65536)
LN2_LO_F32 = F32(math.log(2) - 45426 / 65536)
EXP_MIN_F32 = F32(-87.0)                  # exp(-87) ~ 1.6e-38, the smallest normal float32
TAYLOR_F32 = tuple(F32(c) for c in TAYLOR[:8])


def _float_ir(ty):
    """(LLVM float type, integer type of its bits, mantissa bits, exponent bias) for ty."""
    from llvmlite import ir
    from numba import types
    if ty == types.float32:
        return ir.FloatType(), ir.IntType(32), 23, 127
    return ir.DoubleType(), ir.IntType(64), 52, 1023


@lazy_built("cpu")
def _pow2():
    """Numba intrinsic: 2.0 ** k for an integer-valued float k (float32 or float64) in the
    normal exponent range, by writing the exponent bits.

    bits(k + 1.5 * 2^p) = bits(1.5 * 2^p) + k (p = 52 or 23 mantissa bits); adding the bias
    and shifting left by p drops the constant's high bits and leaves the biased exponent.
    """
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def pow2(typingctx, k):
        ty = types.float32 if k == types.float32 else types.float64

        def codegen(context, builder, signature, args):
            fty, ity, p, bias = _float_ir(ty)
            shifted = builder.fadd(args[0], ir.Constant(fty, 1.5 * 2.0 ** p))
            bits = builder.add(builder.bitcast(shifted, ity), ir.Constant(ity, bias))
            return builder.bitcast(builder.shl(bits, ir.Constant(ity, p)), fty)
        return ty(ty), codegen

    return pow2


@lazy_built("cpu")
def fmax():
    """Numba intrinsic: max(a, b) as LLVM's maxnum (float32 if both are, else float64), which
    the loop vectoriser turns into a packed max reduction (Numba's ``max`` lowers to
    compare-and-branch code that it does not)."""
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


def exp_nonpositive_f32(x):
    """exp(x) in float32 for float32 x <= 0, to ~2 ulp; exactly 0 below -87."""
    xc = max(x, EXP_MIN_F32)
    k = np.floor(xc * LOG2E_F32 + HALF_F32)
    r = xc - k * LN2_HI_F32
    t = k * LN2_LO_F32
    p = TAYLOR_F32[7]
    p = p * r + TAYLOR_F32[6]
    p = p * r + TAYLOR_F32[5]
    p = p * r + TAYLOR_F32[4]
    p = p * r + TAYLOR_F32[3]
    p = p * r + TAYLOR_F32[2]
    p = p * r + TAYLOR_F32[1]
    p = p * r + TAYLOR_F32[0]
    e = (p * (ONE_F32 - t)) * _pow2(k)
    return e if x >= EXP_MIN_F32 else ZERO_F32


def exp(x):
    """exp(x) for x <= 0, in x's precision: ``exp_nonpositive_f32`` for float32, else
    ``exp_nonpositive``.  Plain Python here; Numba compiles the overload below."""
    return math.exp(x)


@lazy_built("cpu")
def exp_cpu():
    """``exp`` with its Numba overload registered (inlined, chosen by the argument's type)."""
    import numba
    from numba import types
    from numba.extending import overload
    from ._dispatch import materialize
    materialize(globals(), "cpu")
    e64 = numba.njit(inline="always", fastmath=FASTMATH)(exp_nonpositive)
    e32 = numba.njit(inline="always", fastmath=FASTMATH)(exp_nonpositive_f32)

    @overload(exp, inline="always", fastmath=FASTMATH)
    def _exp(x):
        if x == types.float32:
            return lambda x: e32(x)
        return lambda x: e64(x)

    return exp
