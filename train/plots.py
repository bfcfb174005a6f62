"""matplotlib for the commands that draw (train.report, train.explore): the
headless backend, and figures written whole or not at all."""

import os

from train import workdir as workdirs


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save(fig, path):
    """Lays out `fig` and writes it to `path` as a PNG through a temporary file
    (workdir.atomic_path), making its folder; closes fig either way. Returns path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fig.tight_layout()
        with workdirs.atomic_path(path, ".png") as tmp:
            fig.savefig(tmp)
    finally:
        pyplot().close(fig)
    return path
