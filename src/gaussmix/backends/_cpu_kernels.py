"""numba kernels of the fast CPU engine.

Everything here works on checked, C-contiguous arrays and does no validation. One kernel serves
all four covariance types: "full" and "tied" (tied as K copies of its factor) accumulate a
(K, d, d) scatter, "diag" and "spherical" (spherical as d copies of its variance) a (K, d) one,
so each kernel is compiled once per dtype (float32, float64) and the cold-cache start stays
short.

Array conventions inside the kernels:

- ``prec`` is (K, d, d) for the "full" moment and (K, 1, d) for the "diag" moment (the inverse
  standard deviations); ``tri`` says which triangle of a full factor is non-zero (0 both,
  1 upper, 2 lower) so the Mahalanobis term skips the zeros, plus 4 for a factor shared by
  all components up to per-component column scales ``scale`` (K, d) (tied: ones; a common
  orientation D: ``a_k^(-1/2)``); ``scale`` is unused (may be empty) otherwise.
- ``const[k] = log φ_k + log det P_k - d/2 log 2π``, finite (a zero weight is a very negative
  number, not -inf, so that fast-math is safe).
- statistics are per *group* of rows, ``(n_groups, K, ...)`` in float64, summed afterwards in
  group order: the result does not depend on how threads were scheduled.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)
from gaussmix._vecmath import exp_nonpos, f64_bits, log_ge1, transpose_block, transpose_rows
from gaussmix._vecmath import fmax as _fmax
from gaussmix._vecmath import fmin as _fmin

__all__ = [
    "EXP_CUT",
    "estep_groups",
    "exp_nonpos",
    "extremes_groups",
    "f64_bits",
    "log_ge1",
    "log_joint_from_projection",
    "log_joint_from_split_projection",
    "ops_from_log_joint",
    "quadratic_features",
    "resp_from_log_joint",
    "rows_op",
    "scaled_centred",
]

# reassociation lets sums over rows vectorise; no nnan/ninf: inputs may hold large negatives
_FM = {"contract", "reassoc", "nsz", "arcp"}
_JIT = {"cache": True, "nogil": True, "fastmath": _FM, "error_model": "numpy"}

# log-ratios below these are exact zeros: exp would be a denormal (slow) or 0 anyway
EXP_CUT = {np.dtype(np.float64): -600.0, np.dtype(np.float32): -70.0}

@nb.njit(**_JIT)
def _diag_log_joint(xt, m, K, means, prec, const, acc, lj):
    """``lj[k, :m]`` for the diagonal moment (``prec`` (K, 1, d): inverse standard deviations).

    Four features per pass over the tile: one load and store of the accumulator per four
    squared terms instead of per term (the passes are bound by memory operations). A component
    with one inverse standard deviation for all features (the spherical models) sums the
    squared differences and scales once: a multiplication fewer per feature.
    """
    d = xt.shape[0]
    dt = xt.dtype.type
    for k in range(K):
        for r in range(m):
            acc[r] = 0.0
        p_all = prec[k, 0, 0]
        iso = True
        for i in range(1, d):
            if prec[k, 0, i] != p_all:
                iso = False
                break
        if iso:
            i = 0
            while i + 4 <= d:
                mu0 = means[k, i]
                mu1 = means[k, i + 1]
                mu2 = means[k, i + 2]
                mu3 = means[k, i + 3]
                for r in range(m):
                    t0 = xt[i, r] - mu0
                    t1 = xt[i + 1, r] - mu1
                    t2 = xt[i + 2, r] - mu2
                    t3 = xt[i + 3, r] - mu3
                    acc[r] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
                i += 4
            while i < d:
                mu = means[k, i]
                for r in range(m):
                    t = xt[i, r] - mu
                    acc[r] += t * t
                i += 1
            c = const[k]
            h = dt(0.5) * p_all * p_all
            for r in range(m):
                lj[k, r] = c - h * acc[r]
            continue
        i = 0
        while i + 4 <= d:
            mu0 = means[k, i]
            mu1 = means[k, i + 1]
            mu2 = means[k, i + 2]
            mu3 = means[k, i + 3]
            p0 = prec[k, 0, i]
            p1 = prec[k, 0, i + 1]
            p2 = prec[k, 0, i + 2]
            p3 = prec[k, 0, i + 3]
            for r in range(m):
                t0 = (xt[i, r] - mu0) * p0
                t1 = (xt[i + 1, r] - mu1) * p1
                t2 = (xt[i + 2, r] - mu2) * p2
                t3 = (xt[i + 3, r] - mu3) * p3
                acc[r] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
            i += 4
        while i < d:
            mu = means[k, i]
            p = prec[k, 0, i]
            for r in range(m):
                t = (xt[i, r] - mu) * p
                acc[r] += t * t
            i += 1
        c = const[k]
        for r in range(m):
            lj[k, r] = c - dt(0.5) * acc[r]


@nb.njit(**_JIT)
def _diag_moments(xt, m, resp, sh, sx, sxx):
    """``sx[i] += Σ_r resp_r (x_ri - sh_i)``, ``sxx[i] += Σ_r resp_r (x_ri - sh_i)²``.

    Four features per pass over the tile (one load of the responsibilities per four
    features); each tile's sums in the working dtype, added to the float64 totals.
    """
    d = xt.shape[0]
    dt = xt.dtype.type
    i = 0
    while i + 4 <= d:
        sh0 = sh[i]
        sh1 = sh[i + 1]
        sh2 = sh[i + 2]
        sh3 = sh[i + 3]
        a0 = dt(0.0)
        a1 = dt(0.0)
        a2 = dt(0.0)
        a3 = dt(0.0)
        b0 = dt(0.0)
        b1 = dt(0.0)
        b2 = dt(0.0)
        b3 = dt(0.0)
        for r in range(m):
            q = resp[r]
            t0 = xt[i, r] - sh0
            t1 = xt[i + 1, r] - sh1
            t2 = xt[i + 2, r] - sh2
            t3 = xt[i + 3, r] - sh3
            u0 = q * t0
            u1 = q * t1
            u2 = q * t2
            u3 = q * t3
            a0 += u0
            a1 += u1
            a2 += u2
            a3 += u3
            b0 += u0 * t0
            b1 += u1 * t1
            b2 += u2 * t2
            b3 += u3 * t3
        sx[i] += a0
        sx[i + 1] += a1
        sx[i + 2] += a2
        sx[i + 3] += a3
        sxx[i] += b0
        sxx[i + 1] += b1
        sxx[i + 2] += b2
        sxx[i + 3] += b3
        i += 4
    while i < d:
        sh0 = sh[i]
        a0 = dt(0.0)
        b0 = dt(0.0)
        for r in range(m):
            t0 = xt[i, r] - sh0
            u0 = resp[r] * t0
            a0 += u0
            b0 += u0 * t0
        sx[i] += a0
        sxx[i] += b0
        i += 1

@nb.njit(**_JIT)
def _full2_log_joint(xt, m, K, means, prec, const, lj):
    """``lj[k, :m]`` for two features and full (any triangle) per-component factors: one pass
    per component with everything in registers (the general 4 × 4 blocked loops made six
    passes over the tile at d = 2, the shape of W1 and W5)."""
    dt = xt.dtype.type
    for k in range(K):
        mu0 = means[k, 0]
        mu1 = means[k, 1]
        p00 = prec[k, 0, 0]
        p01 = prec[k, 0, 1]
        p10 = prec[k, 1, 0]
        p11 = prec[k, 1, 1]
        c = const[k]
        for r in range(m):
            d0 = xt[0, r] - mu0
            d1 = xt[1, r] - mu1
            y0 = d0 * p00 + d1 * p10
            y1 = d0 * p01 + d1 * p11
            lj[k, r] = c - dt(0.5) * (y0 * y0 + y1 * y1)


@nb.njit(**_JIT)
def _full2_moments(xt, m, resp, sh, sx, sxx):
    """First moments and the lower triangle of the scatter for two features, one pass."""
    dt = xt.dtype.type
    sh0 = sh[0]
    sh1 = sh[1]
    a0 = dt(0.0)
    a1 = dt(0.0)
    b00 = dt(0.0)
    b10 = dt(0.0)
    b11 = dt(0.0)
    for r in range(m):
        q = resp[r]
        t0 = xt[0, r] - sh0
        t1 = xt[1, r] - sh1
        u0 = q * t0
        u1 = q * t1
        a0 += u0
        a1 += u1
        b00 += u0 * t0
        b10 += u1 * t0
        b11 += u1 * t1
    sx[0] += a0
    sx[1] += a1
    sxx[0, 0] += b00
    sxx[1, 0] += b10
    sxx[1, 1] += b11


@nb.njit(**_JIT)
def _padded_width(d, single):
    """Features of the written-out loops for ``d`` features (0: the general loops);
    ``single``: float32 data. The 16-wide loops do the zero padding's multiply-adds too:
    measured faster than the 4 × 4 blocks from 13 features in float64, from 14 in float32
    (whose 8-wide vectors make the blocks cheaper)."""
    if 3 <= d <= 4:
        return 4
    if 5 <= d <= 8:
        return 8
    if (13 if not single else 14) <= d <= 16:
        return 16
    return 0


@nb.njit(**_JIT)
def _pad(means, prec, width):
    """``means`` and ``prec`` padded with zeros to ``width`` (4, 8 or 16) features, for
    :func:`_upper4_log_joint`, :func:`_upper8_log_joint`, :func:`_upper16_log_joint` (empty
    arrays for width 0)."""
    K, d = means.shape
    n = K if width else 0
    mu = np.zeros((n, width), dtype=means.dtype)
    P = np.zeros((n, width, width), dtype=prec.dtype)
    for k in range(n):
        for i in range(d):
            mu[k, i] = means[k, i]
            for j in range(d):
                P[k, i, j] = prec[k, i, j]
    return mu, P


# --- begin: written by tools/gen_upper.py, do not edit ---


@nb.njit(**_JIT)
def _upper4_log_joint(xt, m, K, mu, P, const, lj):
    """:func:`_upper8_log_joint` for 3 to 4 features (padded to 4)."""
    d = xt.shape[0]
    dt = xt.dtype.type
    i3 = min(3, d - 1)
    for k in range(K):
        c = const[k]
        m0, m1, m2, m3 = mu[k, 0], mu[k, 1], mu[k, 2], mu[k, 3]
        p0_0, p0_1, p0_2, p0_3 = P[k, 0, 0], P[k, 0, 1], P[k, 0, 2], P[k, 0, 3]
        p1_1, p1_2, p1_3 = P[k, 1, 1], P[k, 1, 2], P[k, 1, 3]
        p2_2, p2_3 = P[k, 2, 2], P[k, 2, 3]
        p3_3 = P[k, 3, 3]
        for r in range(m):
            d0 = xt[0, r] - m0
            d1 = xt[1, r] - m1
            d2 = xt[2, r] - m2
            d3 = xt[i3, r] - m3
            y0 = d0 * p0_0
            y1 = d0 * p0_1 + d1 * p1_1
            y2 = d0 * p0_2 + d1 * p1_2 + d2 * p2_2
            y3 = d0 * p0_3 + d1 * p1_3 + d2 * p2_3 + d3 * p3_3
            q = (y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3)
            lj[k, r] = c - dt(0.5) * q


@nb.njit(**_JIT)
def _upper8_log_joint(xt, m, K, mu, P, const, lj):
    """``lj[k, :m]`` for 5 to 8 features and upper triangular factors (those of
    every M-step): the multiply-adds of each row's ``(x - μ_k) P_k`` written out, every
    coefficient in a local variable ahead of the loop over rows (tools/gen_upper.py).
    Fewer features are padded with zero factor entries (``mu`` (K, 8) and ``P``
    (K, 8, 8) from :func:`_pad`; the rows of ``xt`` read in place of the missing
    features are then multiplied by 0)."""
    d = xt.shape[0]
    dt = xt.dtype.type
    i5 = min(5, d - 1)
    i6 = min(6, d - 1)
    i7 = min(7, d - 1)
    for k in range(K):
        c = const[k]
        m0, m1, m2, m3 = mu[k, 0], mu[k, 1], mu[k, 2], mu[k, 3]
        m4, m5, m6, m7 = mu[k, 4], mu[k, 5], mu[k, 6], mu[k, 7]
        p0_0, p0_1, p0_2, p0_3 = P[k, 0, 0], P[k, 0, 1], P[k, 0, 2], P[k, 0, 3]
        p0_4, p0_5, p0_6, p0_7 = P[k, 0, 4], P[k, 0, 5], P[k, 0, 6], P[k, 0, 7]
        p1_1, p1_2, p1_3, p1_4 = P[k, 1, 1], P[k, 1, 2], P[k, 1, 3], P[k, 1, 4]
        p1_5, p1_6, p1_7 = P[k, 1, 5], P[k, 1, 6], P[k, 1, 7]
        p2_2, p2_3, p2_4, p2_5 = P[k, 2, 2], P[k, 2, 3], P[k, 2, 4], P[k, 2, 5]
        p2_6, p2_7 = P[k, 2, 6], P[k, 2, 7]
        p3_3, p3_4, p3_5, p3_6 = P[k, 3, 3], P[k, 3, 4], P[k, 3, 5], P[k, 3, 6]
        p3_7 = P[k, 3, 7]
        p4_4, p4_5, p4_6, p4_7 = P[k, 4, 4], P[k, 4, 5], P[k, 4, 6], P[k, 4, 7]
        p5_5, p5_6, p5_7 = P[k, 5, 5], P[k, 5, 6], P[k, 5, 7]
        p6_6, p6_7 = P[k, 6, 6], P[k, 6, 7]
        p7_7 = P[k, 7, 7]
        for r in range(m):
            d0 = xt[0, r] - m0
            d1 = xt[1, r] - m1
            d2 = xt[2, r] - m2
            d3 = xt[3, r] - m3
            d4 = xt[4, r] - m4
            d5 = xt[i5, r] - m5
            d6 = xt[i6, r] - m6
            d7 = xt[i7, r] - m7
            y0 = d0 * p0_0
            y1 = d0 * p0_1 + d1 * p1_1
            y2 = d0 * p0_2 + d1 * p1_2 + d2 * p2_2
            y3 = d0 * p0_3 + d1 * p1_3 + d2 * p2_3 + d3 * p3_3
            y4 = (d0 * p0_4 + d1 * p1_4 + d2 * p2_4 + d3 * p3_4) + (d4 * p4_4)
            y5 = (d0 * p0_5 + d1 * p1_5 + d2 * p2_5 + d3 * p3_5) + (d4 * p4_5 + d5 * p5_5)
            y6 = (
                (d0 * p0_6 + d1 * p1_6 + d2 * p2_6 + d3 * p3_6) +
                (d4 * p4_6 + d5 * p5_6 + d6 * p6_6)
            )
            y7 = (
                (d0 * p0_7 + d1 * p1_7 + d2 * p2_7 + d3 * p3_7) +
                (d4 * p4_7 + d5 * p5_7 + d6 * p6_7 + d7 * p7_7)
            )
            q = (y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3) + (y4 * y4 + y5 * y5 + y6 * y6 + y7 * y7)
            lj[k, r] = c - dt(0.5) * q


@nb.njit(**_JIT)
def _upper16_log_joint(xt, m, K, mu, P, const, lj):
    """:func:`_upper8_log_joint` for 13 to 16 features (padded to 16)."""
    d = xt.shape[0]
    dt = xt.dtype.type
    i13 = min(13, d - 1)
    i14 = min(14, d - 1)
    i15 = min(15, d - 1)
    for k in range(K):
        c = const[k]
        m0, m1, m2, m3 = mu[k, 0], mu[k, 1], mu[k, 2], mu[k, 3]
        m4, m5, m6, m7 = mu[k, 4], mu[k, 5], mu[k, 6], mu[k, 7]
        m8, m9, m10, m11 = mu[k, 8], mu[k, 9], mu[k, 10], mu[k, 11]
        m12, m13, m14, m15 = mu[k, 12], mu[k, 13], mu[k, 14], mu[k, 15]
        p0_0, p0_1, p0_2, p0_3 = P[k, 0, 0], P[k, 0, 1], P[k, 0, 2], P[k, 0, 3]
        p0_4, p0_5, p0_6, p0_7 = P[k, 0, 4], P[k, 0, 5], P[k, 0, 6], P[k, 0, 7]
        p0_8, p0_9, p0_10, p0_11 = P[k, 0, 8], P[k, 0, 9], P[k, 0, 10], P[k, 0, 11]
        p0_12, p0_13, p0_14, p0_15 = P[k, 0, 12], P[k, 0, 13], P[k, 0, 14], P[k, 0, 15]
        p1_1, p1_2, p1_3, p1_4 = P[k, 1, 1], P[k, 1, 2], P[k, 1, 3], P[k, 1, 4]
        p1_5, p1_6, p1_7, p1_8 = P[k, 1, 5], P[k, 1, 6], P[k, 1, 7], P[k, 1, 8]
        p1_9, p1_10, p1_11, p1_12 = P[k, 1, 9], P[k, 1, 10], P[k, 1, 11], P[k, 1, 12]
        p1_13, p1_14, p1_15 = P[k, 1, 13], P[k, 1, 14], P[k, 1, 15]
        p2_2, p2_3, p2_4, p2_5 = P[k, 2, 2], P[k, 2, 3], P[k, 2, 4], P[k, 2, 5]
        p2_6, p2_7, p2_8, p2_9 = P[k, 2, 6], P[k, 2, 7], P[k, 2, 8], P[k, 2, 9]
        p2_10, p2_11, p2_12, p2_13 = P[k, 2, 10], P[k, 2, 11], P[k, 2, 12], P[k, 2, 13]
        p2_14, p2_15 = P[k, 2, 14], P[k, 2, 15]
        p3_3, p3_4, p3_5, p3_6 = P[k, 3, 3], P[k, 3, 4], P[k, 3, 5], P[k, 3, 6]
        p3_7, p3_8, p3_9, p3_10 = P[k, 3, 7], P[k, 3, 8], P[k, 3, 9], P[k, 3, 10]
        p3_11, p3_12, p3_13, p3_14 = P[k, 3, 11], P[k, 3, 12], P[k, 3, 13], P[k, 3, 14]
        p3_15 = P[k, 3, 15]
        p4_4, p4_5, p4_6, p4_7 = P[k, 4, 4], P[k, 4, 5], P[k, 4, 6], P[k, 4, 7]
        p4_8, p4_9, p4_10, p4_11 = P[k, 4, 8], P[k, 4, 9], P[k, 4, 10], P[k, 4, 11]
        p4_12, p4_13, p4_14, p4_15 = P[k, 4, 12], P[k, 4, 13], P[k, 4, 14], P[k, 4, 15]
        p5_5, p5_6, p5_7, p5_8 = P[k, 5, 5], P[k, 5, 6], P[k, 5, 7], P[k, 5, 8]
        p5_9, p5_10, p5_11, p5_12 = P[k, 5, 9], P[k, 5, 10], P[k, 5, 11], P[k, 5, 12]
        p5_13, p5_14, p5_15 = P[k, 5, 13], P[k, 5, 14], P[k, 5, 15]
        p6_6, p6_7, p6_8, p6_9 = P[k, 6, 6], P[k, 6, 7], P[k, 6, 8], P[k, 6, 9]
        p6_10, p6_11, p6_12, p6_13 = P[k, 6, 10], P[k, 6, 11], P[k, 6, 12], P[k, 6, 13]
        p6_14, p6_15 = P[k, 6, 14], P[k, 6, 15]
        p7_7, p7_8, p7_9, p7_10 = P[k, 7, 7], P[k, 7, 8], P[k, 7, 9], P[k, 7, 10]
        p7_11, p7_12, p7_13, p7_14 = P[k, 7, 11], P[k, 7, 12], P[k, 7, 13], P[k, 7, 14]
        p7_15 = P[k, 7, 15]
        p8_8, p8_9, p8_10, p8_11 = P[k, 8, 8], P[k, 8, 9], P[k, 8, 10], P[k, 8, 11]
        p8_12, p8_13, p8_14, p8_15 = P[k, 8, 12], P[k, 8, 13], P[k, 8, 14], P[k, 8, 15]
        p9_9, p9_10, p9_11, p9_12 = P[k, 9, 9], P[k, 9, 10], P[k, 9, 11], P[k, 9, 12]
        p9_13, p9_14, p9_15 = P[k, 9, 13], P[k, 9, 14], P[k, 9, 15]
        p10_10, p10_11, p10_12, p10_13 = P[k, 10, 10], P[k, 10, 11], P[k, 10, 12], P[k, 10, 13]
        p10_14, p10_15 = P[k, 10, 14], P[k, 10, 15]
        p11_11, p11_12, p11_13, p11_14 = P[k, 11, 11], P[k, 11, 12], P[k, 11, 13], P[k, 11, 14]
        p11_15 = P[k, 11, 15]
        p12_12, p12_13, p12_14, p12_15 = P[k, 12, 12], P[k, 12, 13], P[k, 12, 14], P[k, 12, 15]
        p13_13, p13_14, p13_15 = P[k, 13, 13], P[k, 13, 14], P[k, 13, 15]
        p14_14, p14_15 = P[k, 14, 14], P[k, 14, 15]
        p15_15 = P[k, 15, 15]
        for r in range(m):
            d0 = xt[0, r] - m0
            d1 = xt[1, r] - m1
            d2 = xt[2, r] - m2
            d3 = xt[3, r] - m3
            d4 = xt[4, r] - m4
            d5 = xt[5, r] - m5
            d6 = xt[6, r] - m6
            d7 = xt[7, r] - m7
            d8 = xt[8, r] - m8
            d9 = xt[9, r] - m9
            d10 = xt[10, r] - m10
            d11 = xt[11, r] - m11
            d12 = xt[12, r] - m12
            d13 = xt[i13, r] - m13
            d14 = xt[i14, r] - m14
            d15 = xt[i15, r] - m15
            y0 = d0 * p0_0
            y1 = d0 * p0_1 + d1 * p1_1
            y2 = d0 * p0_2 + d1 * p1_2 + d2 * p2_2
            y3 = d0 * p0_3 + d1 * p1_3 + d2 * p2_3 + d3 * p3_3
            y4 = (d0 * p0_4 + d1 * p1_4 + d2 * p2_4 + d3 * p3_4) + (d4 * p4_4)
            y5 = (d0 * p0_5 + d1 * p1_5 + d2 * p2_5 + d3 * p3_5) + (d4 * p4_5 + d5 * p5_5)
            y6 = (
                (d0 * p0_6 + d1 * p1_6 + d2 * p2_6 + d3 * p3_6) +
                (d4 * p4_6 + d5 * p5_6 + d6 * p6_6)
            )
            y7 = (
                (d0 * p0_7 + d1 * p1_7 + d2 * p2_7 + d3 * p3_7) +
                (d4 * p4_7 + d5 * p5_7 + d6 * p6_7 + d7 * p7_7)
            )
            y8 = (
                (d0 * p0_8 + d1 * p1_8 + d2 * p2_8 + d3 * p3_8) +
                (d4 * p4_8 + d5 * p5_8 + d6 * p6_8 + d7 * p7_8) + (d8 * p8_8)
            )
            y9 = (
                (d0 * p0_9 + d1 * p1_9 + d2 * p2_9 + d3 * p3_9) +
                (d4 * p4_9 + d5 * p5_9 + d6 * p6_9 + d7 * p7_9) + (d8 * p8_9 + d9 * p9_9)
            )
            y10 = (
                (d0 * p0_10 + d1 * p1_10 + d2 * p2_10 + d3 * p3_10) +
                (d4 * p4_10 + d5 * p5_10 + d6 * p6_10 + d7 * p7_10) +
                (d8 * p8_10 + d9 * p9_10 + d10 * p10_10)
            )
            y11 = (
                (d0 * p0_11 + d1 * p1_11 + d2 * p2_11 + d3 * p3_11) +
                (d4 * p4_11 + d5 * p5_11 + d6 * p6_11 + d7 * p7_11) +
                (d8 * p8_11 + d9 * p9_11 + d10 * p10_11 + d11 * p11_11)
            )
            y12 = (
                (d0 * p0_12 + d1 * p1_12 + d2 * p2_12 + d3 * p3_12) +
                (d4 * p4_12 + d5 * p5_12 + d6 * p6_12 + d7 * p7_12) +
                (d8 * p8_12 + d9 * p9_12 + d10 * p10_12 + d11 * p11_12) + (d12 * p12_12)
            )
            y13 = (
                (d0 * p0_13 + d1 * p1_13 + d2 * p2_13 + d3 * p3_13) +
                (d4 * p4_13 + d5 * p5_13 + d6 * p6_13 + d7 * p7_13) +
                (d8 * p8_13 + d9 * p9_13 + d10 * p10_13 + d11 * p11_13) +
                (d12 * p12_13 + d13 * p13_13)
            )
            y14 = (
                (d0 * p0_14 + d1 * p1_14 + d2 * p2_14 + d3 * p3_14) +
                (d4 * p4_14 + d5 * p5_14 + d6 * p6_14 + d7 * p7_14) +
                (d8 * p8_14 + d9 * p9_14 + d10 * p10_14 + d11 * p11_14) +
                (d12 * p12_14 + d13 * p13_14 + d14 * p14_14)
            )
            y15 = (
                (d0 * p0_15 + d1 * p1_15 + d2 * p2_15 + d3 * p3_15) +
                (d4 * p4_15 + d5 * p5_15 + d6 * p6_15 + d7 * p7_15) +
                (d8 * p8_15 + d9 * p9_15 + d10 * p10_15 + d11 * p11_15) +
                (d12 * p12_15 + d13 * p13_15 + d14 * p14_15 + d15 * p15_15)
            )
            q = (
                (y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3) + (y4 * y4 + y5 * y5 + y6 * y6 + y7 * y7) +
                (y8 * y8 + y9 * y9 + y10 * y10 + y11 * y11) +
                (y12 * y12 + y13 * y13 + y14 * y14 + y15 * y15)
            )
            lj[k, r] = c - dt(0.5) * q


# --- end: written by tools/gen_upper.py ---


@nb.njit(**_JIT)
def _row_max(lj, m, mx):
    """``mx[:m] = max_k lj[k, :m]``."""
    K = lj.shape[0]
    for r in range(m):
        mx[r] = lj[0, r]
    for k in range(1, K):
        for r in range(m):
            mx[r] = _fmax(lj[k, r], mx[r])


@nb.njit(**_JIT)
def _exp_tile(lj, m, mx, cut, tot):
    """``lj[k, :m] = exp(lj[k, :m] - mx[:m])`` and ``tot[:m]`` their sums over k.

    The exponentials first, then the sums (the same order of additions): the loop that did
    both ran 1.2-1.4x slower (measured).
    """
    K = lj.shape[0]
    for k in range(K):
        row = lj[k]
        for r in range(m):
            row[r] = exp_nonpos(row[r] - mx[r], cut)
    for r in range(m):
        tot[r] = lj[0, r]
    for k in range(1, K):
        row = lj[k]
        for r in range(m):
            tot[r] += row[r]

@nb.njit(**_JIT)
def _row_norms(w, weighted, t0, m, mx, tot, rw, lg):
    """Σ_r w_r log p(x_r) of a tile, and ``rw[r] = w_r / tot[r]`` (``lg``: float64 scratch).

    Separate loops with and without weights: a conditional load inside the loop kept it
    scalar (about 7 ns per row instead of 2). One call site of ``log_ge1`` per function: two
    inlined copies made numba warn (``NumbaIRAssumptionWarning``) on compiling.
    """
    ll = 0.0
    dt = rw.dtype.type
    for r in range(m):
        lg[r] = mx[r] + log_ge1(tot[r])
    if weighted:
        for r in range(m):
            ll += w[t0 + r] * lg[r]
        # the sum without a store beside it: a vectorised sum next to a store comes with a
        # run-time overlap test of the arrays whose scalar fallback adds in another order
        # (gaussmix._small._responsibilities: last bits that followed the heap's layout)
        for r in range(m):
            rw[r] = dt(w[t0 + r]) / tot[r]
    else:
        for r in range(m):
            ll += lg[r]
        for r in range(m):
            rw[r] = dt(1.0) / tot[r]
    return ll

@nb.njit(**_JIT)
def _mahalanobis_tile(xt, m, k, means, prec, tri, full, diff, y, acc):
    """``acc[:m] = ||(x - μ_k) P_k||²`` for the rows of a transposed tile ``xt`` (d, m).

    ``y`` is a (4, tile) scratch. Full factors go four output columns by four input features
    at a time: 16 multiply-adds per 12 loads and stores of the tile (one of each per
    multiply-add otherwise), the pass being bound by memory operations, not arithmetic. The
    zeros of a triangular factor inside a 4 × 4 block are multiplied, not skipped.
    """
    d = xt.shape[0]
    for r in range(m):
        acc[r] = 0.0
    if not full:
        # one pass per feature, no centred copy
        for i in range(d):
            mu = means[k, i]
            p = prec[k, 0, i]
            for r in range(m):
                t = (xt[i, r] - mu) * p
                acc[r] += t * t
        return
    for i in range(d):
        mu = means[k, i]
        for r in range(m):
            diff[i, r] = xt[i, r] - mu
    for j0 in range(0, d, 4):
        lo = 0
        hi = d
        if tri == 1:
            hi = min(j0 + 4, d)
        elif tri == 2:
            lo = j0
        if j0 + 4 <= d:
            for r in range(m):
                y[0, r] = 0.0
                y[1, r] = 0.0
                y[2, r] = 0.0
                y[3, r] = 0.0
            i = lo
            while i + 4 <= hi:
                p00 = prec[k, i, j0]
                p01 = prec[k, i, j0 + 1]
                p02 = prec[k, i, j0 + 2]
                p03 = prec[k, i, j0 + 3]
                p10 = prec[k, i + 1, j0]
                p11 = prec[k, i + 1, j0 + 1]
                p12 = prec[k, i + 1, j0 + 2]
                p13 = prec[k, i + 1, j0 + 3]
                p20 = prec[k, i + 2, j0]
                p21 = prec[k, i + 2, j0 + 1]
                p22 = prec[k, i + 2, j0 + 2]
                p23 = prec[k, i + 2, j0 + 3]
                p30 = prec[k, i + 3, j0]
                p31 = prec[k, i + 3, j0 + 1]
                p32 = prec[k, i + 3, j0 + 2]
                p33 = prec[k, i + 3, j0 + 3]
                for r in range(m):
                    d0 = diff[i, r]
                    d1 = diff[i + 1, r]
                    d2 = diff[i + 2, r]
                    d3 = diff[i + 3, r]
                    y[0, r] += (d0 * p00 + d1 * p10) + (d2 * p20 + d3 * p30)
                    y[1, r] += (d0 * p01 + d1 * p11) + (d2 * p21 + d3 * p31)
                    y[2, r] += (d0 * p02 + d1 * p12) + (d2 * p22 + d3 * p32)
                    y[3, r] += (d0 * p03 + d1 * p13) + (d2 * p23 + d3 * p33)
                i += 4
            while i < hi:
                p0 = prec[k, i, j0]
                p1 = prec[k, i, j0 + 1]
                p2 = prec[k, i, j0 + 2]
                p3 = prec[k, i, j0 + 3]
                for r in range(m):
                    d0 = diff[i, r]
                    y[0, r] += d0 * p0
                    y[1, r] += d0 * p1
                    y[2, r] += d0 * p2
                    y[3, r] += d0 * p3
                i += 1
            for r in range(m):
                acc[r] += (y[0, r] * y[0, r] + y[1, r] * y[1, r]) + (
                    y[2, r] * y[2, r] + y[3, r] * y[3, r]
                )
        else:
            # the last d % 4 output columns, one at a time
            for j in range(j0, d):
                jlo = j if tri == 2 else lo
                jhi = j + 1 if tri == 1 else hi
                for r in range(m):
                    y[0, r] = 0.0
                for i in range(jlo, jhi):
                    p = prec[k, i, j]
                    for r in range(m):
                        y[0, r] += diff[i, r] * p
                for r in range(m):
                    acc[r] += y[0, r] * y[0, r]


@nb.njit(**_JIT)
def _project_tile(xt, m, P, tri, yt):
    """``yt[j, :m] = Σ_i xt[i, :m] P[i, j]`` (the tied factor applied once per tile)."""
    d = xt.shape[0]
    for j in range(d):
        lo = 0
        hi = d
        if tri == 1:
            hi = j + 1
        elif tri == 2:
            lo = j
        for r in range(m):
            yt[j, r] = 0.0
        for i in range(lo, hi):
            p = P[i, j]
            for r in range(m):
                yt[j, r] += xt[i, r] * p


@nb.njit(**_JIT)
def _tied_bias(means, P):
    """``μ_k P`` for every component, in the working dtype (as the reference computes it)."""
    K, d = means.shape
    out = np.zeros((K, d), dtype=means.dtype)
    for k in range(K):
        for j in range(d):
            for i in range(d):
                out[k, j] += means[k, i] * P[i, j]
    return out


@nb.njit(**_JIT)
def _log_joint_tile(
    xt, m, K, means, prec, tri, full, const, diff, y, acc, yt, bias, scale, mu_pad, P_pad, lj
):
    """``lj[k, :m]``: log φ_k + log N(x; μ_k, Σ_k) of a transposed tile, every component.

    ``tri >= 4`` marks a shared projection (``prec[0]``, triangle ``tri - 4``) with
    per-component column scales ``scale`` (K, d): factors ``P_k = P diag(s_k)`` (a tied
    covariance: s = 1; a common orientation: P = D, s_k = a_k^(-1/2)). The rows are projected
    once, ``||(x P - μ_k P) s_k||²`` then costs d per component instead of d².
    ``mu_pad``/``P_pad``: the parameters padded to 4, 8 or 16 features for the written-out loops of
    upper triangular factors (:func:`_pad`; empty: not used).
    """
    dt = xt.dtype.type
    if tri >= 4:
        _project_tile(xt, m, prec[0], tri - 4, yt)
        d = xt.shape[0]
        for k in range(K):
            c = const[k]
            for r in range(m):
                acc[r] = 0.0
            for j in range(d):
                b = bias[k, j]
                sc = scale[k, j]
                for r in range(m):
                    t = (yt[j, r] - b) * sc
                    acc[r] += t * t
            for r in range(m):
                lj[k, r] = c - dt(0.5) * acc[r]
        return
    if not full:
        _diag_log_joint(xt, m, K, means, prec, const, acc, lj)
        return
    if xt.shape[0] == 2:
        _full2_log_joint(xt, m, K, means, prec, const, lj)
        return
    if mu_pad.shape[0] > 0:
        if mu_pad.shape[1] == 16:
            _upper16_log_joint(xt, m, K, mu_pad, P_pad, const, lj)
        elif mu_pad.shape[1] == 8:
            _upper8_log_joint(xt, m, K, mu_pad, P_pad, const, lj)
        else:
            _upper4_log_joint(xt, m, K, mu_pad, P_pad, const, lj)
        return
    for k in range(K):
        _mahalanobis_tile(xt, m, k, means, prec, tri, full, diff, y, acc)
        c = const[k]
        for r in range(m):
            lj[k, r] = c - dt(0.5) * acc[r]


@nb.njit(**_JIT)
def _scatter_tile(a, b, m, out):
    """``out[i, j] += Σ_r a[i, r] b[j, r]`` for ``j <= i`` (and a few ``j > i``, unused).

    Blocks of 2 × 4 entries share one pass over the tile: 6 loads per 8 multiply-adds
    instead of 2 per 1. Each tile's sums are taken in the working dtype (at most 512 terms,
    full SIMD width in float32) and added to the float64 ``out``.
    """
    d = a.shape[0]
    dt = a.dtype.type
    for i in range(0, d, 2):
        two = i + 1 < d
        for j in range(0, min(i + 2, d), 4):
            if two and j + 4 <= d:
                s00 = dt(0.0)
                s01 = dt(0.0)
                s02 = dt(0.0)
                s03 = dt(0.0)
                s10 = dt(0.0)
                s11 = dt(0.0)
                s12 = dt(0.0)
                s13 = dt(0.0)
                for r in range(m):
                    a0 = a[i, r]
                    a1 = a[i + 1, r]
                    b0 = b[j, r]
                    b1 = b[j + 1, r]
                    b2 = b[j + 2, r]
                    b3 = b[j + 3, r]
                    s00 += a0 * b0
                    s01 += a0 * b1
                    s02 += a0 * b2
                    s03 += a0 * b3
                    s10 += a1 * b0
                    s11 += a1 * b1
                    s12 += a1 * b2
                    s13 += a1 * b3
                out[i, j] += s00
                out[i, j + 1] += s01
                out[i, j + 2] += s02
                out[i, j + 3] += s03
                out[i + 1, j] += s10
                out[i + 1, j + 1] += s11
                out[i + 1, j + 2] += s12
                out[i + 1, j + 3] += s13
            else:
                for ii in range(i, min(i + 2, d)):
                    for jj in range(j, min(j + 4, d)):
                        s = dt(0.0)
                        for r in range(m):
                            s += a[ii, r] * b[jj, r]
                        out[ii, jj] += s


@nb.njit(**_JIT)
def estep_groups(
    X, w, weighted, means, prec, scale, tri, full, const, shift, cut, tile, group_rows, first,
    stop, step, nk, sx, sxx, ll,
):
    """Statistics of row groups ``first, first + step, ...`` below ``stop``, each into its own
    slot.

    Group ``g`` covers rows ``[g·group_rows, (g+1)·group_rows)``. ``nk (G, K)``,
    ``sx (G, K, d)``, ``sxx (G, K, d, d)`` or ``(G, K, 1, d)``, ``ll (G,)``: the slots of the
    groups handled here are zeroed and filled (only the lower triangle of a full ``sxx``).
    Callers add the slots in group order afterwards, so the sum never depends on which thread
    ran which group, or when. One function with the loop over groups (a wrapper calling a
    per-group function had LLVM optimise the whole inlined E-step twice: 10 s more of a cold
    compile).
    """
    n = X.shape[0]
    d = X.shape[1]
    K = means.shape[0]
    dt = X.dtype.type
    xt = np.empty((d, tile), dtype=X.dtype)
    diff = np.empty((d, tile), dtype=X.dtype)
    wdiff = np.empty((d, tile), dtype=X.dtype)
    yt = np.empty((d, tile), dtype=X.dtype)
    bias = _tied_bias(means, prec[0]) if tri >= 4 else np.empty((0, d), dtype=X.dtype)
    mu_pad, P_pad = _pad(means, prec, _padded_width(d, X.itemsize == 4) if full and tri == 1 else 0)
    lj = np.empty((K, tile), dtype=X.dtype)
    y = np.empty((4, tile), dtype=X.dtype)
    acc = np.empty(tile, dtype=X.dtype)
    mx = np.empty(tile, dtype=X.dtype)
    tot = np.empty(tile, dtype=X.dtype)
    rw = np.empty(tile, dtype=X.dtype)
    lg = np.empty(tile)
    for g in range(first, min(stop, nk.shape[0]), step):
        nkg = nk[g]
        sxg = sx[g]
        sxxg = sxx[g]
        nkg[:] = 0.0
        sxg[:] = 0.0
        sxxg[:] = 0.0
        start = g * group_rows
        end = min(n, start + group_rows)
        llg = 0.0
        for t0 in range(start, end, tile):
            m = min(tile, end - t0)
            transpose_rows(X, t0, m, xt)
            _log_joint_tile(
                xt, m, K, means, prec, tri, full, const, diff, y, acc, yt, bias, scale, mu_pad,
                P_pad, lj,
            )
            _row_max(lj, m, mx)
            _exp_tile(lj, m, mx, cut, tot)
            llg += _row_norms(w, weighted, t0, m, mx, tot, rw, lg)
            for k in range(K):
                # per-tile sums in the working dtype (at most 256 terms), totals in float64
                s = dt(0.0)
                for r in range(m):
                    q = lj[k, r] * rw[r]
                    lj[k, r] = q
                    s += q
                if s == 0.0:
                    # every responsibility of this tile is an exact zero (far component): the
                    # statistics would only add zeros
                    continue
                nkg[k] += s
                if not full:
                    _diag_moments(xt, m, lj[k], shift[k], sxg[k], sxxg[k, 0])
                    continue
                if d == 2:
                    _full2_moments(xt, m, lj[k], shift[k], sxg[k], sxxg[k])
                    continue
                for i in range(d):
                    sh = shift[k, i]
                    s1 = dt(0.0)
                    for r in range(m):
                        t = xt[i, r] - sh
                        u = lj[k, r] * t
                        diff[i, r] = t
                        wdiff[i, r] = u
                        s1 += u
                    sxg[k, i] += s1
                _scatter_tile(wdiff, diff, m, sxxg[k])
        ll[g] = llg


@nb.njit(**_JIT)
def log_joint_from_projection(Y, bias, scale, const, L):
    """``L[r, k] = const_k - ||(y_r - bias_k) s_k||² / 2`` from a chunk's projections
    ``Y = X_c P`` by a matrix shared by all components, ``bias[k] = μ_k P``: factors
    ``P_k = P diag(s_k)`` (see :func:`_log_joint_tile`)."""
    m = Y.shape[0]
    K, d = bias.shape
    dt = Y.dtype.type
    for r in range(m):
        for k in range(K):
            q = dt(0.0)
            for j in range(d):
                t = (Y[r, j] - bias[k, j]) * scale[k, j]
                q += t * t
            L[r, k] = const[k] - dt(0.5) * q


@nb.njit(**_JIT)
def scaled_centred(Xc, R, shift, Z, nk, sx, counts):
    """Component ``k``'s rows ``sqrt(R[r, k]) (x_r - s_k)`` packed into ``Z[k, :counts[k]]``.

    Rows whose responsibility is exactly zero (below the exp cut-off) are left out: with
    well-separated components most rows belong to one component, and the scatter GEMM
    ``Z[k]ᵀ Z[k]`` shrinks accordingly (adding zeros would not change it). Adds ``Σ R`` to
    ``nk`` and ``Σ R (x - s_k)`` to ``sx`` (float64).
    """
    m, d = Xc.shape
    K = shift.shape[0]
    acc = np.empty(d)
    for k in range(K):
        s = 0.0
        acc[:] = 0.0
        n = 0
        for r in range(m):
            rk = R[r, k]
            if rk == 0.0:
                continue
            s += rk
            sq = math.sqrt(rk)
            for j in range(d):
                c = Xc[r, j] - shift[k, j]
                acc[j] += rk * c
                Z[k, n, j] = sq * c
            n += 1
        counts[k] = n
        nk[k] += s
        for j in range(d):
            sx[k, j] += acc[j]


@nb.njit(**_JIT)
def _tile_extremes(xt, m, out):
    """Fold the transposed tile's minimum, maximum and NaN count into ``out[0:3]`` (float64):
    a pass over the tile while it is in L1, instead of one over ``X`` from memory."""
    dt = xt.dtype.type
    lo = dt(out[0])
    hi = dt(out[1])
    bad = dt(0.0)
    for i in range(xt.shape[0]):
        row = xt[i]
        for r in range(m):
            v = row[r]
            bad += dt(1.0) if v != v else dt(0.0)
            lo = _fmin(lo, v)
            hi = _fmax(hi, v)
    out[0] = lo
    out[1] = hi
    out[2] += bad


@nb.njit(**_JIT)
def rows_op(
    X, means, prec, scale, tri, full, const, cut, tile, op, group_rows, first, stop, step, out2,
    out1, labels, ext,
):
    """Row-wise functions of the log-joint matrix, for row groups ``first, first + step, ...``
    below ``stop``.

    ``op``: 0 log-joint into ``out2`` (N, K); 1 ``log p(x)`` into ``out1`` (float64);
    2 posteriors into ``out2``; 3 arg-max component into ``labels``; 4 ``log max_k p(k | x)``
    into ``out1`` (float64). ``ext`` (n_groups, 3), unless empty: each group's
    ``(min, max, NaN count)`` of ``X`` (:func:`_tile_extremes`), so that the checks of the
    input need no pass of their own.
    """
    n, d = X.shape
    K = means.shape[0]
    dt = X.dtype.type
    xt = np.empty((d, tile), dtype=X.dtype)
    diff = np.empty((d, tile), dtype=X.dtype)
    lj = np.empty((K, tile), dtype=X.dtype)
    y = np.empty((4, tile), dtype=X.dtype)
    acc = np.empty(tile, dtype=X.dtype)
    mx = np.empty(tile, dtype=X.dtype)
    tot = np.empty(tile, dtype=X.dtype)
    lg = np.empty(tile)
    yt = np.empty((d, tile), dtype=X.dtype)
    bias = _tied_bias(means, prec[0]) if tri >= 4 else np.empty((0, d), dtype=X.dtype)
    mu_pad, P_pad = _pad(means, prec, _padded_width(d, X.itemsize == 4) if full and tri == 1 else 0)
    n_groups = (n + group_rows - 1) // group_rows
    track = ext.shape[0] > 0
    for g in range(first, min(stop, n_groups), step):
        end = min(n, (g + 1) * group_rows)
        if track:
            ext[g, 0] = np.inf
            ext[g, 1] = -np.inf
            ext[g, 2] = 0.0
        for t0 in range(g * group_rows, end, tile):
            m = min(tile, end - t0)
            transpose_rows(X, t0, m, xt)
            if track:
                _tile_extremes(xt, m, ext[g])
            _log_joint_tile(
                xt, m, K, means, prec, tri, full, const, diff, y, acc, yt, bias, scale, mu_pad,
                P_pad, lj,
            )
            if op == 0:
                transpose_block(lj, 0, 0, K, m, out2, t0, 0)
                continue
            _row_max(lj, m, mx)
            if op == 3:
                # the first component at the maximum (as np.argmax): a running minimum of
                # the indices that reach it, kept in floats (vminpd; no masked stores)
                for r in range(m):
                    tot[r] = K
                for k in range(K - 1, -1, -1):
                    kf = dt(k)
                    for r in range(m):
                        tot[r] = _fmin(tot[r], kf if lj[k, r] == mx[r] else dt(K))
                for r in range(m):
                    labels[t0 + r] = np.intp(tot[r])
                continue
            _exp_tile(lj, m, mx, cut, tot)
            if op == 1 or op == 4:
                # one call site of log_ge1 (see _row_norms)
                for r in range(m):
                    lg[r] = log_ge1(tot[r])
                if op == 1:
                    for r in range(m):
                        out1[t0 + r] = np.float64(mx[r]) + lg[r]
                else:
                    for r in range(m):
                        out1[t0 + r] = -lg[r]
            else:
                for r in range(m):
                    acc[r] = dt(1.0) / tot[r]
                for k in range(K):
                    row = lj[k]
                    for r in range(m):
                        row[r] *= acc[r]
                transpose_block(lj, 0, 0, K, m, out2, t0, 0)

@nb.njit(**_JIT)
def log_joint_from_split_projection(YL, YR, biasL, biasR, const, L):
    """Every component's log-joint from per-component projections split in two column blocks.

    Component ``k``'s ``x P_k`` is ``YL[r, k·h:(k+1)·h]`` followed by ``YR[r, k·h':(k+1)·h']``
    (``h`` may be 0), and its ``μ_k P_k`` is ``biasL[k]`` followed by ``biasR[k]``: with upper
    triangular factors the first ``h`` columns only involve the first ``h`` features, which
    saves a quarter of the GEMM. ``L[r, k] = const_k - ||x_r P_k - μ_k P_k||² / 2``.
    """
    m = YR.shape[0]
    K, h = biasL.shape
    hr = biasR.shape[1]
    dt = YR.dtype.type
    for r in range(m):
        for k in range(K):
            q = dt(0.0)
            for j in range(h):
                t = YL[r, k * h + j] - biasL[k, j]
                q += t * t
            for j in range(hr):
                t = YR[r, k * hr + j] - biasR[k, j]
                q += t * t
            L[r, k] = const[k] - dt(0.5) * q


@nb.njit(**_JIT)
def quadratic_features(X, c, F, xc):
    """Rows of ``F``: ``[(x_i - c_i)(x_j - c_j) for i <= j], (x - c), 1`` for each row of ``X``.

    With these features every component's log-joint is one dot product (with weights the
    executor builds from the precision matrices), so all components' Mahalanobis terms are
    one GEMM with a long inner dimension ``d(d+1)/2 + d + 1``: half the multiply-adds of
    ``X @ [P_1 ... P_K]`` and an output of K, not K·d, columns. ``xc`` is a (d,) scratch.
    Unsigned indices: signed ones carry a wrap-around check that keeps the inner loop from
    vectorising.
    """
    m, d = X.shape
    for r in range(m):
        for i in range(d):
            xc[i] = X[r, i] - c[i]
        Fr = F[r]
        idx = np.uint64(0)
        for i in range(d):
            xi = xc[i]
            n = np.uint64(d - i)
            base = np.uint64(i)
            for j in range(n):
                Fr[idx + np.uint64(j)] = xi * xc[base + np.uint64(j)]
            idx += n
        for i in range(d):
            Fr[idx + np.uint64(i)] = xc[i]
        Fr[idx + np.uint64(d)] = 1.0


@nb.njit(**_JIT)
def resp_from_log_joint(L, w, weighted, offset, cut, R, lognorm):
    """Weighted responsibilities of a chunk from its log-joint
    ``L[r, k] = log φ_k + log N(x_r; μ_k, Σ_k)``.

    Writes ``R[r, k] = w_r p(k | x_r)`` and ``lognorm[r] = w_r log p(x_r)`` (float64);
    ``offset`` is the chunk's first row in ``w``. ``R`` may be ``L`` itself.
    """
    m, K = L.shape
    dt = L.dtype.type
    # _fmax and log_ge1 (the sum is >= 1) vectorise where max and libm's log did not: W3's
    # 50 000 x 32 in chunks of 1024, 4.0 against 2.7 ms (scratch, one thread)
    for r in range(m):
        mx = L[r, 0]
        for k in range(1, K):
            mx = _fmax(mx, L[r, k])
        tot = dt(0.0)
        for k in range(K):
            e = exp_nonpos(L[r, k] - mx, cut)
            R[r, k] = e
            tot += e
        wr = w[offset + r] if weighted else 1.0
        lognorm[r] = wr * (mx + log_ge1(tot))
        scale = dt(wr) / tot
        for k in range(K):
            R[r, k] *= scale


@nb.njit(**_JIT)
def ops_from_log_joint(L, cut, op, offset, out1, labels):
    """The row-wise ``op`` of :func:`rows_op` (1-4) from a chunk's log-joint ``L`` (m, K).

    ``L`` is overwritten (posteriors, op 2, in place); ``out1`` and ``labels`` are indexed
    from row ``offset``.
    """
    m, K = L.shape
    dt = L.dtype.type
    for r in range(m):
        if op == 3:
            # the first component at the maximum, as np.argmax
            mx = L[r, 0]
            best = 0
            for k in range(1, K):
                if L[r, k] > mx:
                    mx = L[r, k]
                    best = k
            labels[offset + r] = best
            continue
        # as resp_from_log_joint: a maximum and a log that vectorise
        mx = L[r, 0]
        for k in range(1, K):
            mx = _fmax(mx, L[r, k])
        tot = dt(0.0)
        for k in range(K):
            e = exp_nonpos(L[r, k] - mx, cut)
            L[r, k] = e
            tot += e
        if op == 1 or op == 4:
            # one call site of the inlined log_ge1: two made numba's SSA pass warn
            lg = log_ge1(tot)
            out1[offset + r] = np.float64(mx) + lg if op == 1 else -lg
        else:
            inv = dt(1.0) / tot
            for k in range(K):
                L[r, k] *= inv


@nb.njit(**_JIT)
def extremes_groups(x, group_size, first, stop, out):
    """``out[g] = (min, max, NaN count)`` of the groups ``[first, stop)`` of the flat array
    ``x`` (min and max are meaningless where the count is not 0).

    One pass instead of numpy's ``min`` and ``max`` (and a NaN test): the checks before a
    prediction read ``X`` once.
    """
    n = x.shape[0]
    dt = x.dtype.type
    for g in range(first, min(stop, out.shape[0])):
        lo = dt(np.inf)
        hi = dt(-np.inf)
        bad = dt(0.0)
        for j in range(g * group_size, min(n, (g + 1) * group_size)):
            v = x[j]
            bad += dt(1.0) if v != v else dt(0.0)
            lo = _fmin(lo, v)
            hi = _fmax(hi, v)
        out[g, 0] = lo
        out[g, 1] = hi
        out[g, 2] = bad
