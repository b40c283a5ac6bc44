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
def mm_orientation_loop(W, nk, D, A, omega, variable_volume, tol, max_iter):  # pragma: no cover
    """Iterate MM 1 and MM 2 from ``(D, A)`` until the objective's relative change <= tol.

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
