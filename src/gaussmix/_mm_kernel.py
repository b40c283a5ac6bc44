"""Compiled inner loop of the EVE/VVE M-step (Browne & McNicholas's MM algorithms).

The MM iterations converge linearly and, on weakly separated components, slowly: thousands of
d × d steps per M-step are common at a cold start. In numpy each step costs tens of
microseconds of call overhead for a few thousand flops; compiled, the loop costs what its
arithmetic does. Maths only; :func:`gaussmix._covariance._mm_orientation` documents it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _jacobi_sweep(W, D, A):  # pragma: no cover - compiled
    """Rotate every pair of columns of ``D`` by the angle minimising Σ_k tr(Dᵀ W_k D A_k⁻¹).

    For columns i, j and angle θ the objective is c0 + C1 cos 2θ + C2 sin 2θ with
    C1 = Σ_k (1/a_ki - 1/a_kj)(b_ii - b_jj)/2 and C2 = Σ_k (1/a_ki - 1/a_kj) b_ij, where
    b = Dᵀ W_k D: its minimum over θ is closed-form (2θ = atan2(-C2, -C1)).
    """
    K, d, _ = W.shape
    B = np.empty((K, d, d))
    for k in range(K):
        B[k] = D.T @ W[k] @ D
    for i in range(d - 1):
        for j in range(i + 1, d):
            c1 = 0.0
            c2 = 0.0
            for k in range(K):
                diff = 1.0 / A[k, i] - 1.0 / A[k, j]
                c1 += 0.5 * diff * (B[k, i, i] - B[k, j, j])
                c2 += diff * B[k, i, j]
            if c1 * c1 + c2 * c2 == 0.0:
                continue
            theta = 0.5 * np.arctan2(-c2, -c1)
            c = np.cos(theta)
            s = np.sin(theta)
            for m in range(d):
                di = D[m, i]
                dj = D[m, j]
                D[m, i] = c * di + s * dj
                D[m, j] = -s * di + c * dj
            for k in range(K):
                p = B[k, i, i]
                q = B[k, j, j]
                r = B[k, i, j]
                for m in range(d):
                    if m == i or m == j:
                        continue
                    bi = B[k, m, i]
                    bj = B[k, m, j]
                    B[k, m, i] = c * bi + s * bj
                    B[k, i, m] = B[k, m, i]
                    B[k, m, j] = -s * bi + c * bj
                    B[k, j, m] = B[k, m, j]
                B[k, i, i] = c * c * p + 2.0 * c * s * r + s * s * q
                B[k, j, j] = s * s * p - 2.0 * c * s * r + c * c * q
                B[k, i, j] = (c * c - s * s) * r + c * s * (q - p)
                B[k, j, i] = B[k, i, j]


@njit(cache=True, nogil=True)
def mm_orientation_loop(W, nk, D, A, omega, variable_volume, tol, max_iter):  # pragma: no cover
    """Iterate MM 1, MM 2 and a sweep of exact plane rotations from ``(D, A)`` until the
    objective's relative change <= tol.

    Returns ``(D, A, target, ok)``; ``A`` holds determinant-one shapes (EVE) or ``λ_k A_k``
    (VVE); ``ok`` is False when a shape became non-positive (a singular component).
    """
    K, d, _ = W.shape
    target = np.inf
    previous = np.inf
    diag = np.empty((K, d))
    WD = np.empty((d, d))
    for _ in range(max_iter):
        # MM 1: Σ_k (W_k - ω_k I) D A_k⁻¹
        F = np.zeros((d, d))
        for k in range(K):
            WD[:, :] = W[k] @ D
            for i in range(d):
                for j in range(d):
                    F[i, j] += (WD[i, j] - omega[k] * D[i, j]) / A[k, j]
        P, _s, Rt = np.linalg.svd(F)
        D = P @ Rt
        # MM 2: Σ_k W_k D (A_k⁻¹ - α_k I), α_k = max_j 1/a_kj
        F = np.zeros((d, d))
        for k in range(K):
            alpha = 0.0
            for j in range(d):
                alpha = max(alpha, 1.0 / A[k, j])
            WD[:, :] = W[k] @ D
            for i in range(d):
                for j in range(d):
                    F[i, j] += WD[i, j] * (1.0 / A[k, j] - alpha)
        P, _s, Rt = np.linalg.svd(F)
        D = P @ Rt
        # a sweep of exact plane rotations: the linear MM steps crawl once close (thousands of
        # steps per M-step measured on faithful); each rotation minimises the objective over
        # one angle in closed form, so the sweep cannot increase it and converges fast
        _jacobi_sweep(W, D, A)
        # shapes: normalised diagonals of Dᵀ W_k D
        target = 0.0
        for k in range(K):
            WD[:, :] = W[k] @ D
            log_sum = 0.0
            for j in range(d):
                v = 0.0
                for i in range(d):
                    v += D[i, j] * WD[i, j]
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
                    v += D[i, j] * WD[i, j]
                target += v / A[k, j]
        change = abs(target - previous) / (1.0 + abs(target))
        previous = target
        if change <= tol:
            break
    if variable_volume:
        return D, diag.copy(), target, True
    return D, A, target, True
