"""The in-memory reference executor: plain numpy over row chunks."""

from __future__ import annotations

from collections.abc import Iterator

from numpy.typing import NDArray

from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk
from gaussmix._validation import check_factors_fit

__all__ = ["NumpyExecutor", "default_chunk_size"]

# elements of one (chunk, K) temporary: 2**20 float64 = 8 MiB, well inside L3 + memory budget
_CHUNK_ELEMENTS = 1 << 20


def default_chunk_size(n_components: int, n_features: int) -> int:
    """Rows per chunk so that a (rows, max(K, d)) temporary stays near 8 MiB."""
    return int(max(256, _CHUNK_ELEMENTS // max(n_components, n_features, 1)))


class NumpyExecutor:
    """E-step over an in-memory array, chunk by chunk, with the reference kernel.

    Peak extra memory is O(chunk_size · (K + d) + K · d²), never several N × K arrays.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked data (float32 or float64; memory-mapped arrays work).
    sample_weight : ndarray of shape (n_samples,) or None
        Row weights.
    chunk_size : int, optional
        Rows per chunk (default from :func:`default_chunk_size`).
    device : None
        Accepted for a uniform factory signature; must be None or "cpu".
    """

    def __init__(
        self,
        X: NDArray,
        sample_weight: NDArray | None = None,
        *,
        chunk_size: int | None = None,
        device: str | None = None,
    ) -> None:
        if device not in (None, "cpu"):
            raise ValueError(f"the numpy engine runs on the CPU only, got device={device!r}")
        self.X = X
        self.sample_weight = sample_weight
        self.chunk_size = chunk_size
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype

    def chunks(self, n_components: int) -> Iterator[tuple[NDArray, NDArray | None]]:
        """``(X_chunk, weight_chunk)`` pairs covering all rows in order."""
        size = self.chunk_size or default_chunk_size(n_components, self.n_features)
        w = self.sample_weight
        for start in range(0, self.n_samples, size):
            stop = start + size
            yield self.X[start:stop], None if w is None else w[start:stop]

    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of all chunks under ``params``."""
        shift = params.means if shift is None else shift
        K, d = params.means.shape
        # a float32 collapse (factor beyond float32) is named, not a non-finite log-likelihood
        check_factors_fit(
            params.model.component_factors(params.precisions_cholesky, K, d), self.dtype
        )
        return sum(
            e_step_chunk(Xc, wc, params, shift) for Xc, wc in self.chunks(params.n_components)
        )

    def init_data(self, max_rows, rng):
        """All rows: they are already in memory."""
        return self.X, self.sample_weight
