"""2-D convolution (NCHW, no bias) forward, input gradient and weight gradient, via im2col.

    y[n, o, ho, wo] = sum_{c, i, j} w[o, c, i, j] x[n, c, ho*sh - ph + i*dh, wo*sw - pw + j*dw]

(zero outside the image).  With cols[(c, i, j), (n, ho, wo)] the patch matrix (im2col;
Chellapilla et al. 2006), G = gy laid out as (O, (n, ho, wo)) and W2 = w reshaped (O, C kh kw):

    Y  = W2 @ cols                  (forward; Y is y laid out as (O, (n, ho, wo)))
    gx = col2im(W2^T @ G)           (input gradient: the transposed convolution)
    gw = G @ cols^T                 (weight gradient)

each one large BLAS product over the whole batch (cuBLAS through CuPy on a GPU); the kernels
here are the memory-bound gathers: im2col and its adjoint col2im (which scatter-adds
overlapping patches).
The output size is Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1 (likewise Wo).
``conv2d_input_grad`` takes the input shape explicitly, so a caller can pick an output size
(conv_transpose2d's output_padding).

Implementations (pick one with ``impl=``): ``'reference'`` is the textbook route above
(``reference_im2col/col2im``: strided views and slice adds, NumPy/CuPy); CUDA: one thread per
element for both gathers (col2im gathers, so no atomics).  The default on NumPy arrays (and
``impl='numba'``) computes the same sums with a faster memory layout where it pays, chosen by
shape (``NHWC_MIN_CHANNELS``, ``FLIP_MIN_CHANNELS``; timed by benchmarks/conv_layouts.py):

* channels-last patches: with x moved to NHWC (one pass over x), each patch row
  cols_nhwc[(n, ho, wo), (i, j, c)] is kh runs of kw*C contiguous numbers, so the copy runs
  near memcpy speed (the channel-major copy moves runs of Wo numbers, 8 for an 8x8 image);
  then Y^T = cols_nhwc @ W2'^T, a tall-skinny GEMM, with W2' = w laid out (O, kh kw C);
* below that many channels, per-image patches: cols[n] (C kh kw, Ho Wo) and one GEMM per
  image, W2 @ cols[n], whose stacked result is y in NCHW order (no transposing copy), and
  gw = sum_n gy[n] @ cols[n]^T reads gy as it lies;
* the input gradient of a stride-1 convolution as a forward convolution of gy with the
  flipped, transposed kernel, padding d (k - 1) - p (the transposed convolution of stride 1
  is a convolution), which replaces col2im's kh*kw scatter-adds by one more GEMM;
* else, from NHWC_MIN_CHANNELS channels on, the patch gradient in channels-last rows
  (gy as (N Ho Wo, O) @ W2') scattered back by a Numba kernel, one image per prange
  iteration (32 -> 64 channels, stride 2, 128x28x28: 19.1 against 23.1 ms for the
  channel-major GEMM and col2im, one core); below that, col2im on Numba when installed,
  one prange iteration per channel.
On the 'numba' path the channels-last patch rows of a strided kernel are gathered by a Numba
kernel straight from NCHW x, padding included.

A stride-1 kernel larger than 1x1 whose channels-last patch matrix would reach
``BLOCK_MIN_BYTES`` runs in blocks of images instead (``patch_blocks``): each block's padded
NHWC copy and patch rows are built in two small scratch buffers reused for every block, and
the GEMM reads them while they are still in the L2 cache; no patch matrix is kept for the
weight gradient, which rebuilds its blocks from x and sums gw = sum_b G_b^T @ rows_b.  A
patch matrix is 9x its input for a 3x3 kernel (2.4-9.4 MB for the TinyUNet's 64 8x8 images
of 16-64 channels), so written in one piece it lands in memory and is read back from there,
by the GEMM at once and by the weight gradient one backward pass later.  ``conv2d_gradients``
computes both gradients of such a convolution from one blocked pass over the patch rows of gy
(the input gradient's flipped-kernel convolution), the weight gradient included, so x's
patches are never built for the backward.
A strided kernel runs in blocks too, where Numba runs on one thread, once its patch matrix
would reach ``STRIDED_BLOCK_MIN_BYTES`` (29 MB for the conv net's 128x32x28x28 -> 64 at stride 2):
the forward as above, and ``_strided_gradients`` computes both gradients a block at a time,
gw += G_b^T @ rows_b from x's patch rows rebuilt per block, and gx_b from the patch-gradient
rows R_b = G_b @ W2' scattered back onto the block's images while they are in cache.
All routes compute the same sums in a different order: they agree to rounding.

Channels-last between layers (PyTorch's ``channels_last`` memory format): x, y and gy keep
their logical NCHW shapes, but an array may carry NHWC strides (``a.transpose(0, 2, 3, 1)``
is C-contiguous).  The channels-last routes return such views (y^T = cols_nhwc @ W2'^T is
already NHWC memory) when ``KEEP_CHANNELS_LAST`` is set, and read NHWC-strided x and gy
without a transpose: the next layer's patch copy then moves whole C-runs, the weight
gradient's G^T = gy as (N Ho Wo, O) is a view, and a 1x1 stride-1 unpadded convolution's
patch matrix is x itself.  The channel-major routes return C-contiguous NCHW arrays.
"""
import numpy as np

from ._dispatch import (_is_cupy, _xp, check_float, choose, launch, lazy_cuda_jit,
                        lazy_njit, numba_threads, prange, register,
                        requested_path, serial_twin)

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
CUDA_THREADS = 256     # 8 warps per block for the gathers; untuned: chosen by warp count;
                       # benchmarks/gpu_check.py tunes it
for _name in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"):
    # work = patch entries; col2im's NumPy/Numba time ratio 1.0 at 37k, 1.5 at 147k
    register(_name, threshold=65_536)
# Channels-last patches from 8 input channels on: at 3 (kw*C = 9-number runs) the two layouts
# tied, at 8 channels-last was 1.2x faster, at 32 (the TinyUNet) 1.6x, and at 1 channel 6x
# slower (3-number runs, and a (N Ho Wo, O) result to transpose back).
NHWC_MIN_CHANNELS = 8
# The flipped-kernel input gradient from 16 input channels on (its GEMM's output has C
# columns): 1.6-3.3x faster than col2im at C = 32 and 64 (8x8 and 4x4), 1.9-2.5x at C = O = 16
# (8x8 and 16x16), 1.0-1.1x at C = 16, O = 32 (16x16); at C = 8 it won or lost by up to 1.6x
# between runs, at C = 3 it was 3-4x slower.
FLIP_MIN_CHANNELS = 16
# Return the channels-last routes' results as NCHW views of NHWC memory (True), or copy them
# to C-contiguous NCHW (False).  On: the group norms (``norm.group_norm_act``), the conv bias
# gradient, upsample_nearest and the channel concatenation read and write NHWC memory as it
# lies, so the copies back to NCHW and the next layer's transposes are saved.  TinyUNet step
# (batch 64, one core, CPU clock, median [range] of 5, `benchmarks/models_speed.py --layouts
# --rounds 5 --steps 10`): 20.2 [19.5-21.2] against 22.1 [21.8-24.0] ms copying to NCHW at
# 16 channels, 45.2 [44.9-46.9] against 51.1 [49.9-51.4] ms at 32.
KEEP_CHANNELS_LAST = True
# Convolutions whose gradients share gy's patch rows (``uses_blocks``) run in blocks of images
# of about BLOCK_BYTES of patches once the whole patch matrix would reach BLOCK_MIN_BYTES
# (the L2 is 2 MB).  Forward, one-shot / blocks, ms, one core, CPU clock, median of 22 calls,
# each after 64 MB of other traffic as inside a step: 64x64x8x8 -> 32 (9 MB of patches)
# 4.95 / 2.99, 64x16x8x8 -> 16 (2.3 MB) 1.28 / 0.91, 32x16x8x8 -> 16 (1.1 MB) 0.73 / 0.66,
# 16x16x8x8 -> 16 (0.56 MB) 0.49 / 0.48, 64x16x4x4 -> 16 (0.56 MB) 0.49-0.52 / 0.54, 4 images
# (0.14 MB) 0.35 / 0.36.  Blocks of 0.3-0.6 MB were the fastest on 64 images of 8x8 and 4x4,
# 16-64 channels (0.15 MB 5-30% slower, 1.2-2.4 MB 0-14%); in the TinyUNet step 256 KB-1 MB
# tied.
BLOCK_MIN_BYTES = 1 << 20
BLOCK_BYTES = 1 << 19
# A strided kernel (a stride above 1 on either axis, from NHWC_MIN_CHANNELS input channels)
# runs in blocks from STRIDED_BLOCK_MIN_BYTES of patches, STRIDED_BLOCK_BYTES per block: its
# gradients cannot share gy's patch rows, so each block rebuilds x's patch rows for the weight
# gradient and scatters its patch gradient rows back onto its images for the input gradient.
# 3x3, stride 2, 32 -> 64 channels at 28x28, forward + both gradients, whole matrix / blocks of
# 1 MiB, ms, one core, CPU clock, after 64 MB of other traffic (benchmarks/conv_strided.py):
# 128 images (29 MB of patches) 48.4 / 41.6, 32 (7.2 MB) 11.9 / 10.7, 16 (3.6 MB) 5.8 / 5.6;
# the TinyUNet's 64 images of 8x8, 16 -> 32 (0.6 MB) 0.95 / 1.2-1.4 and 32 -> 64 (1.2 MB)
# 2.3 / 2.7.  Blocks of 2 MiB tied with 1 MiB, 4 MiB were 4-9% slower.  On two threads the
# blocks lost (128 images: 29.5-31.9 against 25.8-27.7 ms, wall clock, best of 15, two runs):
# their copies and scatter run on one thread between block-sized GEMMs, where the whole
# matrix's Numba gather and scatter use both, so they run only where Numba has one thread
# (``numba_threads``).
STRIDED_BLOCK_MIN_BYTES = 4 << 20
STRIDED_BLOCK_BYTES = 1 << 20


def _pair(value, name, where, minimum):
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be a 2-tuple of ints, got {value!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{where}: {name} entries must be >= {minimum}, got {value!r}")
    return a, b


def _geometry(where, x_shape, w_shape, stride, padding, dilation):
    """Validated (N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{where}: x must be (N, C, H, W) and w (O, C, kh, kw), "
                         f"got {tuple(x_shape)} and {tuple(w_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    O, Cw, kh, kw = (int(s) for s in w_shape)
    if C != Cw:
        raise ValueError(f"{where}: x has {C} channels but w expects {Cw}")
    sh, sw = _pair(stride, "stride", where, 1)
    ph, pw = _pair(padding, "padding", where, 0)
    dh, dw = _pair(dilation, "dilation", where, 1)
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{where}: kernel {kh}x{kw} (dilation {dh},{dw}) does not fit the "
                         f"padded {H}x{W} input")
    return N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo


# ------------------------------------------------------------------ reference (NumPy/CuPy)
def _windows(x, g):
    """The strided view (N, C, kh, kw, Ho, Wo) of the zero-padded x: [n, c, i, j, ho, wo] is
    the tap (i, j) of channel c under output pixel (ho, wo) of image n. Nothing is copied but
    the padding."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    xp = _xp(x)
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    sN, sC, sH, sW = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, (N, C, kh, kw, Ho, Wo), (sN, sC, dh * sH, dw * sW, sh * sH, sw * sW))


def reference_im2col(x, g):
    """cols (C kh kw, N Ho Wo): the window view of the zero-padded x, copied."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    windows = _windows(x, g).transpose(1, 2, 3, 0, 4, 5)
    return _xp(x).ascontiguousarray(windows).reshape(C * kh * kw, N * Ho * Wo)


def reference_col2im(cols, g):
    """The adjoint of im2col: scatter-add each patch entry back to its pixel, crop the pad."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    xp = _xp(cols)
    cols = cols.reshape(C, kh, kw, N, Ho, Wo)
    gpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), cols.dtype)
    for i in range(kh):
        for j in range(kw):
            gpad[:, :, i * dh:i * dh + sh * (Ho - 1) + 1:sh,
                 j * dw:j * dw + sw * (Wo - 1) + 1:sw] += cols[:, i, j].transpose(1, 0, 2, 3)
    return xp.ascontiguousarray(gpad[:, :, ph:ph + H, pw:pw + W])


# ------------------------------------------------------------------ Numba CPU
@lazy_njit(inline="always")
def _span(j, s, p, d, size, out_size):
    """The output positions o in [lo, hi) whose input o*s - p + j*d lies inside [0, size)."""
    first = p - j * d                        # o*s >= first  and  o*s < first + size
    lo = max(0, (first + s - 1) // s) if first > 0 else 0
    hi = min(out_size, (first + size + s - 1) // s) if first + size > 0 else 0
    return lo, max(lo, hi)


@lazy_njit(parallel=True, cache=True)
def _numba_col2im(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """Scatter-add of channel c's kh*kw patch rows per prange iteration (no two iterations
    share a pixel); each row of cols is read once, front to back (1.1-1.4x faster than one
    (n, c) plane per iteration, which reads kh*kw rows in short pieces)."""
    N, C, H, W = gx.shape
    P = Ho * Wo
    for c in prange(C):
        for n in range(N):
            gx[n, c] = 0.0
        for i in range(kh):
            h_lo, h_hi = _span(i, sh, ph, dh, H, Ho)
            for j in range(kw):
                w_lo, w_hi = _span(j, sw, pw, dw, W, Wo)
                row = cols[(c * kh + i) * kw + j]
                offset = j * dw - pw
                for n in range(N):
                    plane = gx[n, c]
                    for ho in range(h_lo, h_hi):
                        line = plane[ho * sh - ph + i * dh]
                        start = n * P + ho * Wo
                        for wo in range(w_lo, w_hi):
                            line[wo * sw + offset] += row[start + wo]


@lazy_njit(parallel=True, cache=True)
def _numba_nhwc_im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """Channels-last patch rows straight from x (N, C, H, W), padding included: one output
    row of patches (n, ho) per prange iteration, zeros where a tap falls outside the image.
    x[n] (C H W numbers) stays in cache while its rows are read, so the strided channel reads
    cost less than NumPy's two passes (a padded NHWC copy, then the window copy): 4.3 against
    8.1 ms for 32 channels, 3x3, stride 2 on 128x28x28, one core."""
    N, C, H, W = x.shape
    for t in prange(N * Ho):
        n, ho = t // Ho, t % Ho
        for wo in range(Wo):
            row = cols[t * Wo + wo]
            for i in range(kh):
                h = ho * sh - ph + i * dh
                for j in range(kw):
                    w = wo * sw - pw + j * dw
                    k = (i * kw + j) * C
                    if 0 <= h < H and 0 <= w < W:
                        for c in range(C):
                            row[k + c] = x[n, c, h, w]
                    else:
                        for c in range(C):
                            row[k + c] = 0.0


@lazy_njit(cache=True)
def _nhwc_col2im_image(rows, gx, n, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """Image n of ``_numba_nhwc_col2im``: the sums go to a zero-padded channels-last image
    first, in runs of C numbers (kw*C when a row's taps are adjacent, dw = 1), which LLVM
    vectorises, and the padding is cropped off in one transposing copy to gx[n] (C, H, W).
    Views indexed by a ``range`` variable keep negative-index checks out of the inner loops,
    which would stop the vectoriser; and this body is its own function, not the prange body,
    which measured 1.4x slower (4.0 against 2.9 ms, 128 images, one thread)."""
    C, H, W = gx.shape[1:]
    Wp = W + 2 * pw
    run = kw * C if dw == 1 else C
    taps = 1 if dw == 1 else kw
    acc = np.zeros((H + 2 * ph) * Wp * C, gx.dtype)
    for ho in range(Ho):
        for wo in range(Wo):
            row = rows[(n * Ho + ho) * Wo + wo]
            for i in range(kh):
                for j in range(taps):
                    start = ((ho * sh + i * dh) * Wp + wo * sw + j * dw) * C
                    into = acc[start:start + run]
                    add = row[(i * kw + j) * C:(i * kw + j) * C + run]
                    for t in range(run):
                        into[t] += add[t]
    for h in range(H):
        line = acc[(h + ph) * Wp * C:(h + ph + 1) * Wp * C]
        for c in range(C):
            out = gx[n, c, h]
            for w in range(W):
                out[w] = line[(w + pw) * C + c]


@lazy_njit(parallel=True, cache=True)
def _numba_nhwc_col2im(rows, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """The adjoint of ``_numba_nhwc_im2col``: each channels-last patch row (n, ho, wo) of
    ``rows`` scatter-added back onto the pixels of gx (N, C, H, W) it was read from; one
    image per prange iteration, so no two iterations share a pixel.  32 -> 64 channels, 3x3,
    stride 2, 128x28x28, one core, CPU clock, against a strided add per number straight into
    gx: medians 5.1 and 5.5 against 6.7 ms for the whole 29 MB of rows after 64 MB of other
    traffic, 2.3-2.7 against 3.6-4.1 ms (per 128 images) for blocks of 4 images in cache."""
    for n in prange(gx.shape[0]):
        _nhwc_col2im_image(rows, gx, n, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)


# one block of images is too little work to pay for a parallel launch (~0.08 ms of CPU time)
_numba_nhwc_col2im_serial = serial_twin(_numba_nhwc_col2im)


def numba_col2im(cols, g):
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    gx = np.empty((N, C, H, W), cols.dtype)
    launch("numba", _numba_col2im, None, gx.size, None, np.ascontiguousarray(cols), gx,
           kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
    return gx


# ------------------------------------------------------------------ Numba CUDA
@lazy_cuda_jit()
def _cuda_im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """One thread per entry of cols (C kh kw, N Ho Wo)."""
    t = cuda.grid(1)
    N, C, H, W = x.shape
    K, NP = cols.shape
    if t < K * NP:
        row, col = t // NP, t % NP
        n, p = col // (Ho * Wo), col % (Ho * Wo)
        c, ij = row // (kh * kw), row % (kh * kw)
        h = (p // Wo) * sh - ph + (ij // kw) * dh
        w = (p % Wo) * sw - pw + (ij % kw) * dw
        cols[row, col] = x[n, c, h, w] if 0 <= h < H and 0 <= w < W else 0.0


@lazy_cuda_jit()
def _cuda_col2im(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """One thread per pixel of gx: gathers every patch entry that covers it (no atomics)."""
    t = cuda.grid(1)
    N, C, H, W = gx.shape
    if t < N * C * H * W:
        n, c, h, w = t // (C * H * W), (t // (H * W)) % C, (t // W) % H, t % W
        total = 0.0
        for i in range(kh):
            hs = h + ph - i * dh
            if hs >= 0 and hs % sh == 0 and hs // sh < Ho:
                for j in range(kw):
                    ws = w + pw - j * dw
                    if ws >= 0 and ws % sw == 0 and ws // sw < Wo:
                        total += cols[(c * kh + i) * kw + j, (n * Ho + hs // sh) * Wo + ws // sw]
        gx[n, c, h, w] = total


def cuda_im2col(x, g):
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    xp = _xp(x)
    cols = xp.empty((C * kh * kw, N * Ho * Wo), x.dtype)
    launch("cuda", None, _cuda_im2col, cols.size, CUDA_THREADS, xp.ascontiguousarray(x), cols,
           *g[5:])
    return cols


def cuda_col2im(cols, g):
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    xp = _xp(cols)
    gx = xp.empty((N, C, H, W), cols.dtype)
    launch("cuda", None, _cuda_col2im, gx.size, CUDA_THREADS, xp.ascontiguousarray(cols), gx,
           *g[5:])
    return gx


# On the CPU the channel-major im2col stays NumPy's strided copy: a Numba gather measured
# 1.5-3x slower than it (the channels-last one is faster in Numba: _numba_nhwc_im2col).
_IM2COL = {"reference": reference_im2col, "numba": reference_im2col, "cuda": cuda_im2col}
_COL2IM = {"reference": reference_col2im, "numba": numba_col2im, "cuda": cuda_col2im}


# ------------------------------------------------------------------ layouts (NumPy)
def _fast_layouts(path, impl, array):
    """Whether the layouts below may run: NumPy arrays, unless the caller asked for the
    reference route (``impl='reference'`` or ``MINIGEN_KERNELS=reference``)."""
    textbook = impl == "reference" or (impl is None and requested_path() == "reference")
    return path != "cuda" and not textbook and not _is_cupy(array)


def nhwc_im2col(x, g, path="reference"):
    """cols (N Ho Wo, kh kw C): row (n, ho, wo) is the patch under output pixel (ho, wo),
    read from a zero-padded channels-last copy of x (inner runs of kw*C numbers; a 1x1,
    stride-1, unpadded kernel reads x's channels-last layout itself, a view when x is NHWC);
    on the 'numba' path, for strided kernels, one parallel gather from x does both copies.

    The two NumPy copies move x once more than the gather, which reads channels C apart:
    at stride 1 the patch matrix is kh kw times x, the extra pass is cheap and the copy's
    contiguous runs win (64 images of 8x8, 3x3: 0.38 against 0.54 ms at 32 channels, 0.71
    against 0.96 at 64, 0.22 against 0.38 at 16; 64x8x16x16: 0.44 against 1.04; one core,
    CPU clock, median of 30), while at stride 2 it is (kh kw / 4) x and the gather wins
    (128x32x28x28: 4.4 against 6.7 ms; 64x32x8x8: 0.17 against 0.19)."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return to_rows(x)
    if path == "numba" and (sh, sw) != (1, 1):
        cols = np.empty((N * Ho * Wo, kh * kw * C), x.dtype)
        launch("numba", _numba_nhwc_im2col, None, cols.size, None, x, cols, *g[5:])
        return cols
    xpad = np.zeros((N, H + 2 * ph, W + 2 * pw, C), x.dtype)
    xpad[:, ph:ph + H, pw:pw + W] = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(_nhwc_windows(xpad, g)).reshape(N * Ho * Wo, kh * kw * C)


def _nhwc_windows(xpad, g):
    """The strided view (n, Ho, Wo, kh, kw, C) of a zero-padded channels-last buffer xpad
    (n, H + 2 ph, W + 2 pw, C): [n, ho, wo, i, j] is the tap (i, j) under output pixel (ho, wo)."""
    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g[5:]
    sN, sH, sW, sC = xpad.strides
    return np.lib.stride_tricks.as_strided(
        xpad, (xpad.shape[0], Ho, Wo, kh, kw, xpad.shape[3]),
        (sN, sh * sH, sw * sW, dh * sH, dw * sW, sC))


def _strided(g):
    return (g[7], g[8]) != (1, 1)


def uses_blocks(g, itemsize):
    """Whether a convolution of geometry g runs in image blocks (``patch_blocks``): a kernel
    larger than 1x1, from NHWC_MIN_CHANNELS input channels, whose channels-last patch matrix
    would reach BLOCK_MIN_BYTES (STRIDED_BLOCK_MIN_BYTES for a strided kernel), and either
    stride 1 with p <= d (k - 1) and FLIP_MIN_CHANNELS input channels, whose gradients
    ``conv2d_gradients`` computes from the patch rows of gy (no patch matrix of x is wanted
    later), or a stride above 1 with Numba on one thread, whose gradients run block by block
    too (``_strided_gradients``)."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    patch_bytes = N * Ho * Wo * kh * kw * C * itemsize
    if kh * kw == 1 or C < NHWC_MIN_CHANNELS:
        return False
    if _strided(g):
        return patch_bytes >= STRIDED_BLOCK_MIN_BYTES and numba_threads() == 1
    return C >= FLIP_MIN_CHANNELS and ph <= dh * (kh - 1) and pw <= dw * (kw - 1) and \
        patch_bytes >= BLOCK_MIN_BYTES


def _images_per_block(g, itemsize):
    block_bytes = STRIDED_BLOCK_BYTES if _strided(g) else BLOCK_BYTES
    return max(1, min(g[0], block_bytes // max(1, g[13] * g[14] * g[5] * g[6] * g[1] * itemsize)))


def patch_blocks(x, g):
    """Yield (start, stop, rows): the channels-last patch rows (as ``nhwc_im2col``) of images
    start..stop-1, built in two scratch buffers reused for every block (a zero-padded NHWC copy
    of the images, then the window copy), each block's patches about BLOCK_BYTES
    (STRIDED_BLOCK_BYTES), so that the copies and the GEMM that reads them stay in the L2
    cache.  Both copies stay NumPy's at every stride: in cache they beat the Numba gather that
    ``nhwc_im2col`` uses for a whole strided patch matrix (4 images of 32x28x28, 3x3, stride
    2, per 128 images: 0.86 + 0.80 ms against 3.3 ms, one core, CPU clock)."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    K = kh * kw * C
    per_block = _images_per_block(g, x.dtype.itemsize)
    xpad = np.zeros((per_block, H + 2 * ph, W + 2 * pw, C), x.dtype)
    windows = _nhwc_windows(xpad, g)
    rows = np.empty((per_block * Ho * Wo, K), x.dtype)
    x_last = x.transpose(0, 2, 3, 1)
    for start in range(0, N, per_block):
        stop = min(N, start + per_block)
        m = stop - start
        xpad[:m, ph:ph + H, pw:pw + W] = x_last[start:stop]
        block = rows[:m * Ho * Wo]
        np.copyto(block.reshape(m, Ho, Wo, kh, kw, C), windows[:m])
        yield start, stop, block


def blocked_conv2d(x, w, g, each_block=None):
    """y = conv2d(x, w) one block of images at a time: Y_b^T = rows_b @ W2'^T, written
    straight into y (NCHW, or the NHWC memory of a ``from_rows`` view); then
    ``each_block(start, stop, rows)``, if given, while the block's patch rows are in cache."""
    N, O, Ho, Wo = g[0], g[4], g[13], g[14]
    P = Ho * Wo
    W2t = _weights_last(w).T
    per_block = N if KEEP_CHANNELS_LAST else _images_per_block(g, x.dtype.itemsize)
    Y = np.empty((per_block * P, O), x.dtype)
    y = None if KEEP_CHANNELS_LAST else np.empty((N, O, Ho, Wo), x.dtype)
    for start, stop, rows in patch_blocks(x, g):
        m = stop - start
        if KEEP_CHANNELS_LAST:
            np.matmul(rows, W2t, out=Y[start * P:stop * P])
        else:
            np.matmul(rows, W2t, out=Y[:m * P])
            y[start:stop] = Y[:m * P].reshape(m, Ho, Wo, O).transpose(0, 3, 1, 2)
        if each_block is not None:
            each_block(start, stop, rows)
    return from_rows(Y, N, Ho, Wo) if KEEP_CHANNELS_LAST else y


def blocked_weight_grad(x, gy, g):
    """gw = sum over blocks of G_b^T @ rows_b, each block's patches rebuilt from x."""
    O, C, kh, kw = g[4], g[1], g[5], g[6]
    P = g[13] * g[14]
    G = to_rows(gy)
    gw = np.zeros((O, kh * kw * C), np.result_type(x, gy))
    part = np.empty_like(gw)
    for start, stop, rows in patch_blocks(x, g):
        gw += np.matmul(G[start * P:stop * P].T, rows, out=part)
    return np.ascontiguousarray(gw.reshape(O, kh, kw, C).transpose(0, 3, 1, 2), dtype=x.dtype)


def _strided_gradients(x, gy, w, g, path, x_shape=None):
    """(gx, gw) of a strided convolution in image blocks, each block's arrays in cache:
    G_b, the channels-last rows (m Ho Wo, O) of gy's block (a view when gy is NHWC memory,
    else a transposing copy into a scratch buffer); gw = sum_b G_b^T @ rows_b with x's patch
    rows rebuilt block by block (``patch_blocks``); gx_b = the adjoint of the patch gather
    applied to R_b = G_b @ W2' (``_scatter_rows``).  With x None (``x_shape`` given) only gx
    is computed, and gw is None."""
    N, C, H, W, O, kh, kw = g[:7]
    Ho, Wo = g[13], g[14]
    P, K = Ho * Wo, kh * kw * C
    per_block = _images_per_block(g, gy.dtype.itemsize)
    W2 = _weights_last(w)
    nhwc = gy.transpose(0, 2, 3, 1).flags.c_contiguous
    G = to_rows(gy) if nhwc else np.empty((per_block * P, O), gy.dtype)
    R = np.empty((per_block * P, K), np.result_type(gy, w))
    gx = np.empty(tuple(x_shape) if x is None else x.shape, R.dtype)
    scratch = None if path == "numba" else \
        np.empty((per_block, H + 2 * g[9], W + 2 * g[10], C), R.dtype)
    if x is None:
        blocks = ((s, min(N, s + per_block), None) for s in range(0, N, per_block))
        gw = None
    else:
        blocks = patch_blocks(x, g)
        gw = np.zeros((O, K), np.result_type(x, gy))
        part = np.empty_like(gw)
    for start, stop, rows in blocks:
        m = stop - start
        if nhwc:
            G_b = G[start * P:stop * P]
        else:
            G_b = G[:m * P]
            np.copyto(G_b.reshape(m, Ho, Wo, O), gy[start:stop].transpose(0, 2, 3, 1))
        if gw is not None:
            gw += np.matmul(G_b.T, rows, out=part)
        R_b = np.matmul(G_b, W2, out=R[:m * P])
        _scatter_rows(R_b, gx[start:stop], g, path, scratch)
    if gw is not None:
        gw = np.ascontiguousarray(gw.reshape(O, kh, kw, C).transpose(0, 3, 1, 2), dtype=x.dtype)
    return gx, gw


def _scatter_rows(rows, gx, g, path, scratch):
    """gx (m, C, H, W) = the adjoint of the channels-last patch gather applied to ``rows``
    (m Ho Wo, kh kw C): each entry added back onto the pixel it was read from, padding
    dropped.  'numba': ``_numba_nhwc_col2im``; else kh*kw strided slice adds into ``scratch``
    (a zero-padded NHWC block, C-runs contiguous), then one transposing copy into gx."""
    if path == "numba":
        launch(path, _numba_nhwc_col2im_serial, None, rows.size, None, rows, gx, *g[5:])
        return
    m, C, H, W = gx.shape
    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g[5:]
    gpad = scratch[:m]
    gpad[...] = 0
    taps = rows.reshape(m, Ho, Wo, kh, kw, C)
    for i in range(kh):
        for j in range(kw):
            gpad[:, i * dh:i * dh + sh * (Ho - 1) + 1:sh,
                 j * dw:j * dw + sw * (Wo - 1) + 1:sw] += taps[:, :, :, i, j]
    gx[...] = gpad[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2)


def batched_im2col(x, g):
    """cols (N, C kh kw, Ho Wo): image n's own patch matrix, so that W2 @ cols (one GEMM per
    image, NumPy's stacked matmul) is y already in NCHW order. For few input channels this
    replaces the one wide GEMM W2 @ cols (O, N Ho Wo) and the transposing copy of its result
    to NCHW, and the weight gradient reads gy as it lies: with 1 channel, 32 outputs, 3x3,
    128x28x28 the forward took 1.0 ms against 8.8 ms and the weight gradient 1.7 ms against
    5.2 ms (one core, CPU clock, best of 15)."""
    N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = g
    return np.ascontiguousarray(_windows(x, g)).reshape(N, C * kh * kw, Ho * Wo)


def to_rows(a):
    """a (N, C, H, W) as the (N H W, C) matrix of its channels-last layout: a view when a is
    NHWC in memory, else one transposing copy."""
    N, C, H, W = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(N * H * W, C)


def from_rows(rows, N, H, W):
    """The (N H W, C) matrix ``rows`` as an (N, C, H, W) array: an NCHW view of its NHWC
    memory under ``KEEP_CHANNELS_LAST``, else a C-contiguous copy."""
    y = rows.reshape(N, H, W, rows.shape[1]).transpose(0, 3, 1, 2)
    return y if KEEP_CHANNELS_LAST else np.ascontiguousarray(y)


def backward_rows(x, gy, w_shape, impl=None):
    """gy laid out for both gradients of a convolution of x: an NCHW view of a channels-last
    copy when the weight gradient reads gy's channels-last rows (the fast layouts, from
    NHWC_MIN_CHANNELS input channels), else gy itself.  The input gradient then reads the same
    copy: its patch rows, or its rows @ W2' at stride 2, start from contiguous C-runs, and gy
    is transposed once instead of twice (conv net, 128x64x14x14: 1.8 ms a step)."""
    N, C = x.shape[:2]
    work = N * int(np.prod(w_shape[1:])) * gy.shape[2] * gy.shape[3]
    if C < NHWC_MIN_CHANNELS or \
            not _fast_layouts(choose("conv2d_weight_grad", x, work, impl), impl, x):
        return gy
    return np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _weights_last(w):
    """w (O, C, kh, kw) laid out (O, kh kw C), to match nhwc_im2col's columns."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


# ------------------------------------------------------------------ public API
def conv2d(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), impl=None, *,
           return_patches=False):
    """y (N, O, Ho, Wo) = the cross-correlation of x (N, C, H, W) with w (O, C, kh, kw).

    ``return_patches=True`` returns (y, patches): the channels-last or per-image patch
    matrix when one of those routes ran (else None), which
    ``conv2d_weight_grad(..., patches=)`` reuses instead of building it again."""
    where = "conv2d"
    check_float(where, x=x, w=w)
    g = _geometry(where, x.shape, w.shape, stride, padding, dilation)
    N, O, Ho, Wo = g[0], g[4], g[13], g[14]
    if x.dtype != w.dtype:
        raise TypeError(f"{where}: x and w must have the same dtype, got {x.dtype} and {w.dtype}")
    path = choose(where, x, N * w[0].size * Ho * Wo, impl)
    patches = None
    if _fast_layouts(path, impl, x) and g[1] >= NHWC_MIN_CHANNELS and \
            uses_blocks(g, x.dtype.itemsize):
        y = blocked_conv2d(x, w, g)
    elif _fast_layouts(path, impl, x) and g[1] >= NHWC_MIN_CHANNELS:
        patches = nhwc_im2col(x, g, path)
        y = from_rows(patches @ _weights_last(w).T, N, Ho, Wo)   # Y^T: (N Ho Wo, O)
    elif _fast_layouts(path, impl, x):
        patches = batched_im2col(x, g)
        y = (w.reshape(O, -1) @ patches).reshape(N, O, Ho, Wo)
    else:
        Y = w.reshape(O, -1) @ _IM2COL[path](x, g)           # (O, N Ho Wo)
        y = _xp(x).ascontiguousarray(Y.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3))
    return (y, patches) if return_patches else y


def _flip_applies(path, impl, gy, w, g):
    """Whether the input gradient may run as the forward convolution of gy with the flipped
    kernel: gx[n, c] = sum_{o,i,j} gy_pad[n, o, h + i d, w + j d] w[o, c, k-1-i, k-1-j], gy
    padded by d (k - 1) - p.  Stride 1 and p <= d (k - 1) only; a non-finite w would meet
    gy's zero padding (0 * inf = nan), which col2im never does."""
    kh, kw, sh, sw, ph, pw, dh, dw = g[5:13]
    return _fast_layouts(path, impl, gy) and (sh, sw) == (1, 1) and gy.dtype == w.dtype and \
        g[1] >= FLIP_MIN_CHANNELS and ph <= dh * (kh - 1) and pw <= dw * (kw - 1) and \
        bool(np.isfinite(w).all())


def _flipped(w):
    """w (O, C, kh, kw) as the kernel (C, O, kh, kw) of the flipped-kernel input gradient."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def _flip_geometry(g):
    kh, kw, ph, pw, dh, dw = g[5], g[6], g[9], g[10], g[11], g[12]
    return (1, 1), (dh * (kh - 1) - ph, dw * (kw - 1) - pw), (dh, dw)


def conv2d_input_grad(gy, w, x_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      impl=None):
    """gx (x_shape) = the transpose of conv2d in x applied to gy: col2im(W2^T @ gy)."""
    where = "conv2d_input_grad"
    check_float(where, gy=gy, w=w)
    g = _geometry(where, x_shape, w.shape, stride, padding, dilation)
    N, O, Ho, Wo = g[0], g[4], g[13], g[14]
    if tuple(gy.shape) != (N, O, Ho, Wo):
        raise ValueError(f"{where}: gy must have shape {(N, O, Ho, Wo)} for x_shape "
                         f"{tuple(x_shape)}, got {tuple(gy.shape)}")
    kh, kw = g[5], g[6]
    path = choose(where, gy, N * g[1] * kh * kw * Ho * Wo, impl)
    if _flip_applies(path, impl, gy, w, g):
        return conv2d(gy, _flipped(w), *_flip_geometry(g), impl=impl)
    if _fast_layouts(path, impl, gy) and g[1] >= NHWC_MIN_CHANNELS and _strided(g) and \
            uses_blocks(g, gy.dtype.itemsize):
        return _strided_gradients(None, gy, w, g, path, x_shape)[0]
    if path == "numba" and _fast_layouts(path, impl, gy) and g[1] >= NHWC_MIN_CHANNELS:
        # channels-last patch rows of the gradient, scattered back by the adjoint gather
        rows = to_rows(gy) @ _weights_last(w)           # (N Ho Wo, kh kw C)
        gx = np.empty(tuple(x_shape), rows.dtype)
        launch(path, _numba_nhwc_col2im, None, rows.size, None, rows, gx, *g[5:])
        return gx
    G = gy.reshape(N, O, Ho * Wo).transpose(1, 0, 2).reshape(O, N * Ho * Wo)
    return _COL2IM[path](w.reshape(O, -1).T @ G, g)


def conv2d_weight_grad(x, gy, w_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       impl=None, *, patches=None):
    """gw (w_shape) = sum_n gy[n] @ cols[n]^T, the gradient of conv2d in w (``patches``: the
    matrix ``conv2d(x, ..., return_patches=True)`` returned for this x, to reuse)."""
    where = "conv2d_weight_grad"
    check_float(where, x=x, gy=gy)
    g = _geometry(where, x.shape, w_shape, stride, padding, dilation)
    N, O, Ho, Wo = g[0], g[4], g[13], g[14]
    if tuple(gy.shape) != (N, O, Ho, Wo):
        raise ValueError(f"{where}: gy must have shape {(N, O, Ho, Wo)}, got {tuple(gy.shape)}")
    path = choose(where, x, N * int(np.prod(w_shape[1:])) * Ho * Wo, impl)
    K = g[1] * g[5] * g[6]
    if _fast_layouts(path, impl, x) and g[1] >= NHWC_MIN_CHANNELS:
        if patches is None or patches.shape != (N * Ho * Wo, K):
            if uses_blocks(g, x.dtype.itemsize):
                return blocked_weight_grad(x, gy, g)
            patches = nhwc_im2col(x, g, path)
        gw = (to_rows(gy).T @ patches).reshape(O, g[5], g[6], g[1]).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(gw, dtype=x.dtype)
    if _fast_layouts(path, impl, x):
        if patches is None or patches.shape != (N, K, Ho * Wo):
            patches = batched_im2col(x, g)
        # gw = sum_n gy[n] @ cols[n]^T: one (O, K) product per image, then their sum
        gw = (gy.reshape(N, O, Ho * Wo) @ patches.transpose(0, 2, 1)).sum(axis=0)
        return gw.reshape(tuple(w_shape)).astype(x.dtype, copy=False)
    G = gy.reshape(N, O, Ho * Wo).transpose(1, 0, 2).reshape(O, N * Ho * Wo)
    gw = G @ _IM2COL[path](x, g).T
    return gw.reshape(tuple(w_shape)).astype(x.dtype, copy=False)


def conv2d_gradients(x, gy, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), impl=None, *,
                     patches=None):
    """(gx, gw): both gradients of conv2d(x, w) for the output gradient gy, equal to
    ``conv2d_input_grad`` and ``conv2d_weight_grad`` (``patches`` as there).

    Where the input gradient runs as the flipped-kernel convolution of gy, for kernels larger
    than 1x1, both run in image blocks of the patch rows Q of the padded gy:
    gw[o, c, k-1-i, k-1-j] = sum_{n,h,w} x[n, c, h, w] Q[(n, h, w), (i, j, o)] (substitute
    h = ho + a - p in gw's sum), so each block's Q_b serves two GEMMs while it is in cache,
    gx_b = Q_b @ W_flip and gw_flip += X_b^T @ Q_b, and x's patches are never built.  That
    sum also multiplies x by gy's zero padding and leaves out gy times x's zero padding, so it
    runs on finite x and gy only (0 * inf = nan would differ from the reference)."""
    where = "conv2d_gradients"
    check_float(where, x=x, gy=gy, w=w)
    g = _geometry(where, x.shape, w.shape, stride, padding, dilation)
    N, C, O, kh, kw, Ho, Wo = g[0], g[1], g[4], g[5], g[6], g[13], g[14]
    if tuple(gy.shape) != (N, O, Ho, Wo):
        raise ValueError(f"{where}: gy must have shape {(N, O, Ho, Wo)}, got {tuple(gy.shape)}")
    path = choose("conv2d_input_grad", gy, N * C * kh * kw * Ho * Wo, impl)
    if kh * kw > 1 and x.dtype == gy.dtype and _flip_applies(path, impl, gy, w, g) and \
            np.isfinite(x).all() and np.isfinite(gy).all():
        return _blocked_gradients(x, gy, w, _geometry(where, gy.shape, (C, O, kh, kw),
                                                      *_flip_geometry(g)))
    if _fast_layouts(path, impl, gy) and C >= NHWC_MIN_CHANNELS and _strided(g) and \
            x.dtype == gy.dtype == w.dtype and uses_blocks(g, x.dtype.itemsize):
        return _strided_gradients(x, gy, w, g, path)
    gy = backward_rows(x, gy, w.shape, impl)
    return (conv2d_input_grad(gy, w, x.shape, stride, padding, dilation, impl),
            conv2d_weight_grad(x, gy, w.shape, stride, padding, dilation, impl, patches=patches))


def _blocked_gradients(x, gy, w, flip):
    """``conv2d_gradients``' shared-patch route; ``flip`` is the geometry of the flipped-kernel
    convolution of gy, whose output has x's shape."""
    N, O, C, kh, kw, H, W = flip[0], flip[1], flip[4], flip[5], flip[6], flip[13], flip[14]
    P = H * W
    x_rows = np.empty((_images_per_block(flip, gy.dtype.itemsize) * P, C), x.dtype)
    gw_flip = np.zeros((C, kh * kw * O), x.dtype)
    part = np.empty_like(gw_flip)
    x_last = x.transpose(0, 2, 3, 1)

    def weight_grad(start, stop, rows):
        block = x_rows[:(stop - start) * P]
        block.reshape(stop - start, H, W, C)[...] = x_last[start:stop]
        np.add(gw_flip, np.matmul(block.T, rows, out=part), out=gw_flip)

    gx = blocked_conv2d(gy, _flipped(w), flip, weight_grad)
    gw = gw_flip.reshape(C, kh, kw, O)[:, ::-1, ::-1].transpose(3, 0, 1, 2)
    return gx, np.ascontiguousarray(gw)
