"""Compiled inner loop of the EVE/VVE M-step (Browne & McNicholas's MM algorithms).

The MM iterations converge linearly and, on weakly separated components, slowly: thousands of
d × d steps per M-step are common at a cold start. In numpy each step costs tens of
microseconds of call overhead for a few thousand flops; compiled, the loop costs what its
arithmetic does. Maths only; :func:`gaussmix._covariance._mm_orientation` documents it.

Per outer iteration (W2 shape: d = 16, K = 16) the costs are the two MM steps' polar factors
(one-sided Jacobi warm-started from the previous iteration, not a fresh SVD each time) and
the sweep of 120 plane rotations (most pairs need one evaluation of their profile, and pairs
already at their optimum none); each K-fold product is one GEMM. The iteration path is the
one the plain algorithm takes, to rounding: `benchmarks/bench_mm.py` times it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)

#: cap on the EVE/VVE inner iterations (see mm_orientation_loop)
MM_MAX_ITER = 300


#: a plane rotation whose predicted decrease of the objective is below this share of it is
#: skipped (and a Newton iteration on its angle stops there): 120 such pairs (d = 16) move the
#: objective by ~1e-16 of itself, under the outer loop's 1e-15 stopping test and at the
#: rounding floor of the objective's own evaluation
SKIP_REL = 1e-18


@njit(cache=True, nogil=True)
def _profile(phi, u, r, p0, w, d, variable_volume, ratio):  # pragma: no cover - compiled
    """Change of one column pair's profile objective at rotation 2θ = φ, and its first two
    derivatives.

    With b = Dᵀ W_k D, rotating columns i, j by θ leaves b_ii b_jj = P(φ) = m² - t² with
    t = u cos φ + r sin φ (m = (b_ii + b_jj)/2, u = (b_ii - b_jj)/2, r = b_ij), and every other
    diagonal entry unchanged. Shapes re-optimised for that D give VVE's objective
    Σ_k n_k log P_k + const and EVE's Σ_k G_k (P_k / P_k(0))^(1/d), G_k the geometric mean of
    diag(b_k) at φ = 0. The change from φ = 0 is formed from P - P(0) = u² - t²
    = (u (1 - cos φ) - r sin φ)(u + t) without cancellation, so that the acceptance test
    "no increase" stays exact for steps whose effect is far below the objective's rounding
    (comparing two rounded objective values there is a coin toss that costs halvings).
    ``w`` holds n_k (VVE) or G_k (EVE); ``p0`` holds P_k(0) = b_ii b_jj. EVE writes
    (P_k / P_k(0))^(1/d) into ``ratio``: the factor G_k takes if the rotation is made.
    """
    dh = 0.0
    h1 = 0.0
    h2 = 0.0
    c = np.cos(phi)
    s = np.sin(phi)
    half = np.sin(0.5 * phi)
    one_minus_c = 2.0 * half * half
    for k in range(u.shape[0]):
        t = u[k] * c + r[k] * s
        t1 = -u[k] * s + r[k] * c
        x = (u[k] * one_minus_c - r[k] * s) * (u[k] + t) / p0[k]
        if not x > -1.0:
            return np.inf, 0.0, 0.0
        P = p0[k] * (1.0 + x)
        a = -2.0 * t * t1 / P
        b = -2.0 * (t1 * t1 - t * t) / P
        if variable_volume:
            dh += w[k] * np.log1p(x)
            h1 += w[k] * a
            h2 += w[k] * (b - a * a)
        else:
            em = np.expm1(np.log1p(x) / d)
            dh += w[k] * em
            ratio[k] = 1.0 + em
            g = w[k] * ratio[k] / d
            h1 += g * a
            h2 += g * ((1.0 / d - 1.0) * a * a + b)
    return dh, h1, h2


@njit(cache=True, nogil=True)
def _jacobi_sweep(W, D, nk, variable_volume):  # pragma: no cover - compiled
    """Rotate every pair of columns of ``D`` by the angle minimising the profile objective.

    The linear MM steps crawl once close (thousands of steps per M-step measured on faithful,
    where D and the shapes are strongly coupled); minimising the objective with the shapes
    already optimal for D, one plane rotation at a time (Newton on the angle, safeguarded so
    no rotation increases it, as Flury & Gautschi do for common principal components),
    converges in a few sweeps. A pair whose Newton model at angle 0 predicts a negligible
    decrease (``SKIP_REL``) is left alone: near convergence most are, and testing that needs
    no transcendental function.
    """
    K, d, _ = W.shape
    # B[a, b, k] = (Dᵀ W_k D)[a, b]: components innermost, so that the per-pair quantities
    # and the rotations below run over contiguous memory; two products over all components
    # (W_k D stacked, then Dᵀ times them side by side) instead of 2K small ones
    WD = np.ascontiguousarray(W).reshape((K * d, d)) @ D
    T = np.empty((d, d, K))
    for k in range(K):
        for c in range(d):
            for b in range(d):
                T[c, b, k] = WD[k * d + c, b]
    B = (np.ascontiguousarray(D.T) @ T.reshape((d, d * K))).reshape((d, d, K))
    # EVE's weights G_k (kept current through the rotations by the profile's ratios) and the
    # objective, the scale of the skip threshold
    G = np.empty(K)
    scale = 0.0
    for k in range(K):
        total = 0.0
        for q in range(d):
            v = B[q, q, k]
            total += np.log(v) if v > 0.0 else -np.inf
        G[k] = np.exp(total / d)
        scale += nk[k] * (total - d * np.log(nk[k])) if variable_volume else d * G[k]
    threshold = SKIP_REL * (1.0 + abs(scale)) if np.isfinite(scale) else 0.0
    w = nk if variable_volume else G
    u = np.empty(K)
    r = np.empty(K)
    p0 = np.empty(K)
    ratio = np.empty(K)
    accepted_ratio = np.empty(K)
    old_ii = np.empty(K)
    old_jj = np.empty(K)
    old_ij = np.empty(K)
    for i in range(d - 1):
        for j in range(i + 1, d):
            h1 = 0.0
            h2 = 0.0
            singular = False
            for k in range(K):
                bii = B[i, i, k]
                bjj = B[j, j, k]
                if not (bii > 0.0 and bjj > 0.0):
                    singular = True
                    break
                u[k] = 0.5 * (bii - bjj)
                r[k] = B[i, j, k]
                p0[k] = bii * bjj
                # derivatives at φ = 0 (t = u, t' = r): no cos, sin or log
                a = -2.0 * u[k] * r[k] / p0[k]
                b = -2.0 * (r[k] * r[k] - u[k] * u[k]) / p0[k]
                if variable_volume:
                    h1 += w[k] * a
                    h2 += w[k] * (b - a * a)
                else:
                    h1 += w[k] / d * a
                    h2 += w[k] / d * ((1.0 / d - 1.0) * a * a + b)
            if singular or h1 == 0.0:
                continue
            if h2 > 0.0 and h1 * h1 <= 2.0 * h2 * threshold:
                continue
            phi = 0.0
            h = 0.0  # the objective's change from φ = 0
            for _ in range(30):
                step = -h1 / h2 if h2 > 0.0 else -np.sign(h1) * 0.1
                if step > 0.5:
                    step = 0.5
                elif step < -0.5:
                    step = -0.5
                accepted = False
                for _halve in range(40):
                    hn, h1n, h2n = _profile(phi + step, u, r, p0, w, d, variable_volume, ratio)
                    if hn <= h:
                        accepted = True
                        break
                    step *= 0.5
                if not accepted:
                    break
                phi += step
                if not variable_volume:
                    accepted_ratio[:] = ratio
                done = (
                    abs(step) < 1e-14
                    or h - hn <= threshold
                    or (h2n > 0.0 and h1n * h1n <= 2.0 * h2n * threshold)
                )
                h, h1, h2 = hn, h1n, h2n
                if done:
                    break
            if phi == 0.0:
                continue
            theta = 0.5 * phi
            c = np.cos(theta)
            s = np.sin(theta)
            for q in range(d):
                di = D[q, i]
                dj = D[q, j]
                D[q, i] = c * di + s * dj
                D[q, j] = -s * di + c * dj
            # rows i and j (contiguous), then their mirror in columns i and j; the 2 × 2 block
            # from its old entries
            for k in range(K):
                old_ii[k] = B[i, i, k]
                old_jj[k] = B[j, j, k]
                old_ij[k] = B[i, j, k]
            for q in range(d):
                for k in range(K):
                    bi = B[i, q, k]
                    bj = B[j, q, k]
                    B[i, q, k] = c * bi + s * bj
                    B[j, q, k] = -s * bi + c * bj
            for q in range(d):
                if q == i or q == j:
                    continue
                for k in range(K):
                    B[q, i, k] = B[i, q, k]
                    B[q, j, k] = B[j, q, k]
            for k in range(K):
                p = old_ii[k]
                qq = old_jj[k]
                rr = old_ij[k]
                B[i, i, k] = c * c * p + 2.0 * c * s * rr + s * s * qq
                B[j, j, k] = s * s * p - 2.0 * c * s * rr + c * c * qq
                B[i, j, k] = (c * c - s * s) * rr + c * s * (qq - p)
                B[j, i, k] = B[i, j, k]
            if not variable_volume:
                for k in range(K):
                    G[k] *= accepted_ratio[k]


#: the Jacobi polar factor stops after a sweep in which no pair of columns had a cosine above
#: this: the sweep's rotations then leave them at rounding (quadratic convergence), and a final
#: Newton–Schulz step makes the factor orthogonal to rounding
POLAR_COSINE = 1e-8
#: ... and leaves a matrix with a singular value below this share of the largest (singular or
#: nearly: directions fixed by rounding only) to LAPACK's SVD
POLAR_MIN_RATIO = 1e-8


@njit(cache=True, nogil=True)
def _jacobi_polar(F, Vt, H, Q):  # pragma: no cover - compiled
    """Orthogonal polar factor ``U Vᵀ`` of ``F = U Σ Vᵀ`` into ``Q``, by one-sided Jacobi
    (Hestenes) rotations started from ``Vt``, the right singular vectors (as rows) of a nearby
    matrix; ``Vt`` is updated to ``F``'s. Returns False (``Q`` undefined) where ``F`` is too
    close to singular or the rotations do not settle.

    Each MM step's matrix differs little from the previous iteration's, so two or three sweeps
    of column rotations reach its singular vectors where LAPACK's SVD (gesdd, ~45 µs at d = 16)
    starts afresh every time. ``H`` is workspace: the rows of ``(F V)ᵀ``, kept contiguous.
    """
    d = F.shape[0]
    np.dot(Vt, F.T, H)
    worst = np.inf
    for _sweep in range(30):
        worst = 0.0
        for i in range(d - 1):
            for j in range(i + 1, d):
                a = 0.0
                b = 0.0
                c = 0.0
                for q in range(d):
                    a += H[i, q] * H[i, q]
                    b += H[j, q] * H[j, q]
                    c += H[i, q] * H[j, q]
                if not (a > 0.0 and b > 0.0):
                    return False
                cosine = abs(c) / np.sqrt(a * b)
                worst = max(worst, cosine)
                if cosine <= 2.220446049250313e-16:
                    continue
                # the rotation that makes rows i and j orthogonal (Rutishauser's formulas)
                zeta = (b - a) / (2.0 * c)
                t = (1.0 if zeta >= 0.0 else -1.0) / (abs(zeta) + np.sqrt(1.0 + zeta * zeta))
                cs = 1.0 / np.sqrt(1.0 + t * t)
                sn = cs * t
                for q in range(d):
                    hi = H[i, q]
                    hj = H[j, q]
                    H[i, q] = cs * hi - sn * hj
                    H[j, q] = sn * hi + cs * hj
                    vi = Vt[i, q]
                    vj = Vt[j, q]
                    Vt[i, q] = cs * vi - sn * vj
                    Vt[j, q] = sn * vi + cs * vj
        if worst <= POLAR_COSINE:
            break
    if not worst <= POLAR_COSINE:
        return False
    # rows of H are now σ_i u_iᵀ: Q = Σ_i u_i v_iᵀ
    top = 0.0
    for i in range(d):
        norm = 0.0
        for q in range(d):
            norm += H[i, q] * H[i, q]
        top = max(top, norm)
    for i in range(d):
        norm = 0.0
        for q in range(d):
            norm += H[i, q] * H[i, q]
        if not norm > POLAR_MIN_RATIO * POLAR_MIN_RATIO * top:
            return False
        scale = 1.0 / np.sqrt(norm)
        for q in range(d):
            H[i, q] *= scale
    np.dot(H.T, Vt, Q)
    # one Newton–Schulz step, Q (3I - QᵀQ) / 2: squares the departure from orthogonality
    M = Q.T @ Q
    for a in range(d):
        for b in range(d):
            M[a, b] = ((3.0 if a == b else 0.0) - M[a, b]) * 0.5
    np.dot(Q, M, H)
    Q[:, :] = H
    return True


@njit(cache=True, nogil=True)
def _orthogonal_factor(F, Vt, H, Q, warm):  # pragma: no cover - compiled
    """The orthogonal matrix nearest ``F`` (its polar factor, the MM steps' minimiser): by
    :func:`_jacobi_polar` from ``Vt`` when ``warm``, else (or where that declines) by SVD,
    whose right singular vectors then become ``Vt``."""
    if warm and _jacobi_polar(F, Vt, H, Q):
        return Q.copy()
    P, _s, Rt = np.linalg.svd(F)
    Vt[:, :] = Rt
    return P @ Rt


@njit(cache=True, nogil=True)
def mm_orientation_loop(W, nk, D, A, omega, variable_volume, tol, max_iter):  # pragma: no cover
    """Iterate MM 1, MM 2 and a sweep of plane rotations from ``(D, A)`` until the
    objective's relative change <= tol.

    Returns ``(D, A, target, ok)``; ``A`` holds determinant-one shapes (EVE) or ``λ_k A_k``
    (VVE); ``ok`` is False when a shape became non-positive (a singular component).
    """
    K, d, _ = W.shape
    # with the rotation sweeps a well-posed M-step converges in tens of iterations; near a
    # degenerate component (one or two points) it turns linear and slow (~1000 measured on
    # banknote), and such a cell's fit is poor anyway: bound the cost there
    max_iter = min(max_iter, MM_MAX_ITER)
    target = np.inf
    previous = np.inf
    diag = np.empty((K, d))
    # all K products W_k D as one (K d) × d product
    W_rows = np.ascontiguousarray(W).reshape((K * d, d))
    WD = np.empty((K, d, d))
    WD_rows = WD.reshape((K * d, d))
    # W_k D for the current D: the shapes step forms it, the next MM 1 reuses it
    WDk = np.empty((K, d, d))
    WDk_rows = WDk.reshape((K * d, d))
    np.dot(W_rows, D, WDk_rows)
    # right singular vectors of the two MM steps' matrices, warm starts for the next iteration
    V1 = np.empty((d, d))
    V2 = np.empty((d, d))
    H = np.empty((d, d))
    Q = np.empty((d, d))
    for it in range(max_iter):
        # MM 1: Σ_k (W_k - ω_k I) D A_k⁻¹
        F = np.zeros((d, d))
        for k in range(K):
            for i in range(d):
                for j in range(d):
                    F[i, j] += (WDk[k, i, j] - omega[k] * D[i, j]) / A[k, j]
        D = _orthogonal_factor(F, V1, H, Q, it > 0)
        # MM 2: Σ_k W_k D (A_k⁻¹ - α_k I), α_k = max_j 1/a_kj
        F = np.zeros((d, d))
        np.dot(W_rows, D, WD_rows)
        for k in range(K):
            alpha = 0.0
            for j in range(d):
                alpha = max(alpha, 1.0 / A[k, j])
            for i in range(d):
                for j in range(d):
                    F[i, j] += WD[k, i, j] * (1.0 / A[k, j] - alpha)
        D = _orthogonal_factor(F, V2, H, Q, it > 0)
        # then plane rotations on the profile objective (see _jacobi_sweep)
        _jacobi_sweep(W, D, nk, variable_volume)
        # shapes: normalised diagonals of Dᵀ W_k D
        target = 0.0
        np.dot(W_rows, D, WDk_rows)
        for k in range(K):
            WDs = WDk[k]
            log_sum = 0.0
            for j in range(d):
                v = 0.0
                for i in range(d):
                    v += D[i, j] * WDs[i, j]
                if variable_volume:
                    v /= nk[k]
                if not v > 0.0:
                    return D, A, np.nan, False
                diag[k, j] = v
                log_sum += np.log(v)
            g = np.exp(log_sum / d)
            if variable_volume:
                # VVE: Σ_k = D diag(a_k) Dᵀ with a_k = diag(Dᵀ W_k D) / n_k, so the MM steps
                # must weigh component k by 1/a_k (not by the determinant-one shape, which
                # drops λ_k and minimises EVE's objective instead); the objective is then the
                # profile -2 log-likelihood Σ_k n_k Σ_j log a_kj
                for j in range(d):
                    A[k, j] = diag[k, j]
                target += nk[k] * log_sum
                continue
            for j in range(d):
                A[k, j] = diag[k, j] / g
            for j in range(d):
                v = 0.0
                for i in range(d):
                    v += D[i, j] * WDs[i, j]
                target += v / A[k, j]
        # the steps never increase the objective: an increase (or a decrease below tol) is
        # the rounding floor, where mclust's |change| test may never be met
        change = (previous - target) / (1.0 + abs(target))
        previous = target
        if change <= tol or np.isnan(change):
            break
    if variable_volume:
        return D, diag.copy(), target, True
    return D, A, target, True
