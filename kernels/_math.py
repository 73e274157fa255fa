"""Scalar math shared by the Numba CPU kernels: a vectorisable exp.

Numba's scalar ``math.exp`` calls libm once per element (no SVML here), which keeps LLVM from
vectorising the loop around it; this polynomial exp is branch-free straight-line code, so a
loop of them becomes AVX2 code.  Range reduction (Cody & Waite 1980):

    exp(x) = 2^k exp(r),  k = round(x / ln 2),  r = x - k ln 2 in [-ln2/2, ln2/2],

ln 2 split into a high and a low part so k ln 2 is exact to ~1e-19; exp(r) is its Taylor
polynomial of degree 12 (remainder |r|^13 / 13! < 2e-16 relative); 2^k is built from its IEEE
bits ((k + 1023) << 52).  Used for x <= 0 only (log-sum-exp shifts), it returns 0 below -708.
"""
import math

from ._dispatch import lazy_built, lazy_njit

# Fast-math flags that keep infinities meaningful (-inf is a legal log-weight): reassociation
# (vectorised reductions), contraction (FMA), no signed zeros, reciprocal approximations.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01       # fdlibm's split of ln 2
LN2_LO = 1.90821492927058770002e-10
EXP_MIN = -708.0                          # exp(-708) ~ 3e-308, the smallest normal scale
TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13))


@lazy_built("cpu")
def _pow2():
    """Numba intrinsic: 2.0 ** k for an int64 k in [-1022, 1023], by writing the exponent bits."""
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def pow2(typingctx, k):
        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
            return builder.bitcast(bits, ir.DoubleType())
        return types.float64(types.int64), codegen

    return pow2


def exp_nonpositive(x):
    """exp(x) for x <= 0 to ~2e-16 relative; exactly 0 for x < -708 (and for x = -inf)."""
    xc = max(x, EXP_MIN)
    k = math.floor(xc * LOG2E + 0.5)
    r = (xc - k * LN2_HI) - k * LN2_LO
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
    e = p * _pow2(int(k))
    return e if x >= EXP_MIN else 0.0


exp_cpu = lazy_njit(inline="always", fastmath=FASTMATH)(exp_nonpositive)
