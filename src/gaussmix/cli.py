"""Command line interface (``gaussmix``)."""

from __future__ import annotations

import click
import numpy as np

from gaussmix import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gaussmix")
def main() -> None:
    """Gaussian mixture models from the shell."""


@main.command()
def demo() -> None:
    """Sample a known 3-component mixture, fit it by EM, print true vs recovered parameters."""
    from gaussmix.demo import demo_data, recovered_vs_true
    from gaussmix.estimator import GaussianMixture

    X, _ = demo_data()
    model = GaussianMixture(3, random_state=0).fit(X)
    click.echo(f"fitted {X.shape[0]} points: log-likelihood {model.score(X) * len(X):.4f}, "
               f"BIC {model.bic(X):.4f}, {model.n_iter_} iterations")
    np.set_printoptions(precision=3, suppress=True)
    for row in recovered_vs_true(model):
        click.echo(f"component {row['component']}:")
        click.echo(f"  weight  true {row['true_weight']:.3f}  fitted {row['fitted_weight']:.3f}")
        click.echo(f"  mean    true {np.array(row['true_mean'])}  fitted {np.array(row['fitted_mean'])}")
        click.echo(f"  cov     true {np.array(row['true_cov']).ravel()}  fitted {np.array(row['fitted_cov']).ravel()}")
