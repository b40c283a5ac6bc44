"""Draw docs/models.png: the 14 covariance models fitted to one data set (gaussmix.plot).

    python docs/models_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gaussmix import GaussianMixture
from gaussmix import plot as gplot
from gaussmix._covariance import MCLUST_MODELS


def main() -> None:
    rng = np.random.RandomState(4)
    covs = [np.array([[2.0, 1.2], [1.2, 1.0]]), np.array([[0.3, 0.0], [0.0, 0.3]]),
            np.array([[1.5, -0.9], [-0.9, 0.8]])]  # fmt: skip
    centres = np.array([[0.0, 0.0], [4.0, 3.0], [5.0, -1.5]])
    X = np.vstack([rng.multivariate_normal(m, c, 150) for m, c in zip(centres, covs, strict=True)])
    fig, axes = plt.subplots(2, 7, figsize=(17, 5.4), sharex=True, sharey=True)
    for ax, model in zip(axes.ravel(), MCLUST_MODELS, strict=True):
        gm = GaussianMixture(3, covariance_type=model, random_state=0, tol=1e-6, max_iter=500)
        gm.fit(X)
        gplot.ellipses(gm, X, ax=ax, point_size=3)
        ax.set_title(f"{model}  BIC {gm.bic(X):.0f}", fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.suptitle("mclust's 14 models, K = 3, on one data set (95 % ellipses; lower BIC is better)")
    fig.tight_layout()
    out = Path(__file__).with_name("models.png")
    fig.savefig(out, dpi=80)
    print(out)


if __name__ == "__main__":
    main()
