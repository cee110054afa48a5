"""Tests of the PNG figure writers (recon grid, training dashboard, latent traversal).

Images are read back with matplotlib.image.imread and checked for size, aspect and content;
the slicing convention and helper choices are checked against hand-computed positions.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from custom.plots.dashboard import plot_dashboard, read_metrics_csv  # noqa: E402
from custom.plots.recon import plot_reconstruction, plot_reconstruction_batch  # noqa: E402
from custom.plots.style import extract_slice, resolve_center, robust_window, seg_center  # noqa: E402
from custom.plots.traversal import (  # noqa: E402
    _steps,
    centre_step,
    most_changing_slice,
    plot_traversal,
    plot_traversal_multiplane,
)


# ----------------------------------------------------------------------------- helpers
def _phantom(shape: tuple[int, int, int], channels: int = 4, seed: int = 0) -> np.ndarray:
    """Ellipsoid 'brain' with a gaussian 'tumour' blob, ``channels`` contrasts, small noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    x, y, z = grids
    brain = ((x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.75) ** 2 < 1).astype(np.float32)
    blob = np.exp(-((x - 0.3) ** 2 + (y - 0.2) ** 2 + z**2) / (2 * 0.15**2))
    vols = [brain * (1 + 0.2 * c) + (c - 1.5) * blob * brain for c in range(channels)]
    return (np.stack(vols) + 0.02 * rng.standard_normal((channels, *shape))).astype(np.float32)


def _blob_decoder(shape: tuple[int, int, int], size: float, shift: float) -> np.ndarray:
    """Fake decoder: a blob whose radius grows with ``size`` and whose x-centre moves with ``shift``."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = 0.15 * math.exp(0.2 * size)
    return (0.5 + np.exp(-((x - 0.2 * shift) ** 2 + y**2 + z**2) / (2 * radius**2))).astype(np.float32)


def _read_png(path: str) -> np.ndarray:
    """Read back a written PNG, asserting it exists and is not empty."""
    assert Path(path).is_file() and Path(path).stat().st_size > 1000
    return mpimg.imread(path)


def _assert_image(img: np.ndarray, min_h: int = 200, min_w: int = 200) -> None:
    """The PNG is big enough and not blank."""
    assert img.ndim == 3 and img.shape[0] >= min_h and img.shape[1] >= min_w
    assert float(img[..., :3].std()) > 0.01


# ----------------------------------------------------------------------------- style helpers
def test_extract_slice_radiological_orientation() -> None:
    """A voxel at high x (patient right) and high y (anterior) lands top-left of the axial slice."""
    vol = np.zeros((5, 6, 7))
    vol[4, 5, 3] = 1.0  # right-most, most anterior, middle z
    axial = extract_slice(vol, "axial", 3)
    assert axial.shape == (6, 5)  # rows = y, cols = x
    assert axial[0, 0] == 1.0
    # coronal: superior voxel on top row, right on the left column
    vol = np.zeros((5, 6, 7))
    vol[4, 2, 6] = 1.0
    coronal = extract_slice(vol, "coronal", 2)
    assert coronal.shape == (7, 5) and coronal[0, 0] == 1.0
    # sagittal: anterior on the left, superior on top; inferior-posterior voxel at bottom-right
    vol = np.zeros((5, 6, 7))
    vol[1, 0, 0] = 1.0
    sagittal = extract_slice(vol, "sagittal", 1)
    assert sagittal.shape == (7, 6) and sagittal[-1, -1] == 1.0
    with pytest.raises(ValueError):
        extract_slice(vol, "oblique", 0)


def test_centres_and_window() -> None:
    seg = np.zeros((10, 12, 8), dtype=np.uint8)
    seg[2:5, 6:9, 1:4] = 3  # centre of mass (3, 7, 2)
    assert seg_center(seg) == (3, 7, 2)
    assert resolve_center(seg.shape, None, seg) == (3, 7, 2)
    assert resolve_center(seg.shape, None) == (5, 6, 4)
    assert resolve_center(seg.shape, (99, -3, 4)) == (9, 0, 4)  # clipped into the volume
    vmin, vmax = robust_window(np.arange(101, dtype=float))
    assert (vmin, vmax) == pytest.approx((1.0, 99.0))
    assert robust_window(np.ones(10)) == (0.5, 1.5)  # flat image still gets a usable window


def test_centre_step_and_most_changing_slice() -> None:
    assert centre_step([-2, -1, 0, 1, 2], 5) == 2
    assert centre_step([-3.0, -0.5, 1.0], 3) == 1
    assert centre_step(None, 4) == 2
    imgs = np.zeros((1, 3, 8, 8, 8), dtype=np.float32)
    imgs[0, 2, :, :, 6] = 1.0  # only axial slice z=6 changes
    assert most_changing_slice(imgs, "axial", ref=1) == 6
    assert most_changing_slice(np.zeros_like(imgs), "axial", ref=1) == 4  # nothing changes -> centre


def test_step_labels_given_as_strings(tmp_path: Path) -> None:
    """Callers may pass ready-made labels like "+1.0σ": their numbers locate the centre step."""
    values, heads = _steps(["-2.0σ", "-1.0σ", "+0.0σ", "+1.0σ"], 4, "σ")
    assert values == [-2.0, -1.0, 0.0, 1.0]
    assert heads[0] == "\u22122.0σ" and heads[3] == "+1.0σ"
    assert centre_step(values, 4) == 2
    imgs = _traversal_stack((32, 32, 32), [-2.0, -1.0, 0.0, 1.0])
    _assert_image(_read_png(plot_traversal(imgs, tmp_path / "s.png", ["a", "b", "c"], ["-2σ", "-1σ", "0", "+1σ"])))


# ----------------------------------------------------------------------------- reconstruction
@pytest.mark.parametrize("shape", [(32, 32, 32), (40, 48, 32)])
def test_plot_reconstruction_shapes(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    x = _phantom(shape)
    out = plot_reconstruction(x, 0.9 * x, tmp_path / "a" / "b" / "recon.png", title="test")
    img = _read_png(out)
    _assert_image(img, 300, 600)
    assert img.shape[1] > 1.5 * img.shape[0]  # 9 panel columns vs 4 modality rows


def test_plot_reconstruction_seg_centre_and_few_channels(tmp_path: Path) -> None:
    x = _phantom((32, 32, 32), channels=2)
    seg = np.zeros((32, 32, 32), dtype=np.uint8)
    seg[20:24, 18:22, 14:18] = 1
    out = plot_reconstruction(x, x[::-1].copy(), str(tmp_path / "r2.png"), modalities=("t1c",), seg=seg)
    img = _read_png(out)
    _assert_image(img, 150, 600)
    assert img.shape[1] > 3 * img.shape[0]  # two rows only
    with pytest.raises(ValueError):
        plot_reconstruction(x, x[:1], tmp_path / "bad.png")


def test_plot_reconstruction_batch(tmp_path: Path) -> None:
    xs = np.stack([_phantom((32, 40, 32), seed=i) for i in range(5)])
    ids = [f"BraTS-MEN-0000{i}-000" for i in range(5)]
    out = plot_reconstruction_batch(xs, xs * 0.8, ids, tmp_path / "n" / "batch.png")
    img = _read_png(out)
    _assert_image(img, 400, 600)
    one = _read_png(plot_reconstruction_batch(xs[:1], xs[:1], ["only"], tmp_path / "one.png"))
    # 5 cases are capped at 4 rows: the figure is taller than the single-case one by ~3 panel rows
    assert img.shape[0] > one.shape[0] * 1.8
    assert img.shape[1] == one.shape[1]


# ----------------------------------------------------------------------------- dashboard
ALL_COLUMNS = [
    "epoch",
    "train_epoch/loss",
    "train_epoch/recon",
    "train_epoch/kl_raw",
    "train_epoch/kl_constrained",
    "train_epoch/cov_penalty",
    "train_epoch/sup_loss",
    "train_epoch/grad_norm",
    "val_epoch/loss",
    "val_epoch/mse",
    "val_epoch/ssim_mean",
    "val_epoch/psnr_mean",
    "sched/beta",
    "sched/expected_kl_floor",
    "sched/lambda_scale",
    "sched/lr",
    "diag/au_frac",
    "diag/au_count",
    "diag/recon_z0_mse",
    "diag/recon_mu_mse",
    "probe/r2_log_volume",
    "probe/r2_centroid_x",
]


def _write_csv(path: Path, columns: list[str], epochs: int = 12, val_every: int = 3) -> Path:
    """Synthetic tidy metrics; val/diag/probe cells are empty except every ``val_every`` epochs."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for e in range(1, epochs + 1):
            row = []
            for col in columns:
                sparse = col.split("/")[0] in ("val_epoch", "diag", "probe")
                if col == "epoch":
                    row.append(e)
                elif sparse and e % val_every:
                    row.append("")
                elif col == "train_epoch/kl_raw":
                    row.append(100.0 * (1 - math.exp(-e / 4)))
                else:
                    row.append(0.5 * math.exp(-e / 6) + 0.01 * (columns.index(col) % 7))
            writer.writerow(row)
    return path


def test_read_metrics_csv_nan_and_missing_epoch(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("train_epoch/loss,val_epoch/loss\n1.0,\n0.5,0.7\nnan,\n")
    table = read_metrics_csv(path)
    np.testing.assert_array_equal(table["epoch"], [1.0, 2.0, 3.0])
    assert table["train_epoch/loss"][1] == 0.5 and math.isnan(table["train_epoch/loss"][2])
    assert math.isnan(table["val_epoch/loss"][0]) and table["val_epoch/loss"][1] == 0.7


def test_plot_dashboard_full_and_partial(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "full.csv", ALL_COLUMNS)
    full = _read_png(plot_dashboard(str(csv_path), str(tmp_path / "d" / "full.png"), title="run"))
    _assert_image(full, 500, 1200)
    assert 1.6 < full.shape[1] / full.shape[0] < 2.8  # 2 rows x 4 columns of panels

    partial_cols = ["epoch", "train_epoch/loss", "val_epoch/loss", "sched/lr"]
    partial = _read_png(plot_dashboard(_write_csv(tmp_path / "p.csv", partial_cols), tmp_path / "p.png"))
    _assert_image(partial, 250, 500)
    assert partial.shape[1] < full.shape[1]  # grid shrinks to 2 panels
    assert partial.shape[0] < full.shape[0]


def test_dashboard_draws_the_tumour_weight_only_when_it_is_not_one(tmp_path: Path) -> None:
    from custom.plots.dashboard import _panel_specs

    table = read_metrics_csv(_write_csv(tmp_path / "a.csv", ALL_COLUMNS))
    n = len(_panel_specs(table))
    table["sched/tumour_weight"] = np.ones_like(table["epoch"])
    assert len(_panel_specs(table)) == n  # the plain likelihood: no panel
    table["sched/tumour_weight"] = np.where(table["epoch"] > 6, 20.0, 1.0)
    assert len(_panel_specs(table)) == n + 1
    png = _read_png(
        plot_dashboard(_write_csv(tmp_path / "b.csv", ALL_COLUMNS + ["sched/tumour_weight"]), tmp_path / "b.png")
    )
    _assert_image(png, 500, 1200)


def test_plot_dashboard_degenerate_csvs(tmp_path: Path) -> None:
    # every validation value empty, a column that is all NaN, non-positive values on log candidates
    cols = ["epoch", "train_epoch/recon", "train_epoch/cov_penalty", "val_epoch/ssim_mean", "train_epoch/kl_raw"]
    path = tmp_path / "deg.csv"
    path.write_text("\n".join([",".join(cols)] + [f"{e},{1.0 / e},0.0,,{1000.0 * e}" for e in range(1, 6)]) + "\n")
    _assert_image(_read_png(plot_dashboard(path, tmp_path / "deg.png")), 200, 300)
    # header only / unknown columns: a figure saying so, not an exception
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,foo\n")
    _assert_image(_read_png(plot_dashboard(empty, tmp_path / "x" / "empty.png", title="nothing")), 150, 150)


# ----------------------------------------------------------------------------- traversal
def _traversal_stack(shape: tuple[int, int, int], steps: list[float]) -> np.ndarray:
    """Row 0: size grows; row 1: blob moves along x; row 2: inactive coordinate."""
    rows = [
        [_blob_decoder(shape, v, 0.0) for v in steps],
        [_blob_decoder(shape, 0.0, v) for v in steps],
        [_blob_decoder(shape, 0.0, 0.0) for _ in steps],
    ]
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("shape", [(32, 32, 32), (40, 48, 32)])
def test_plot_traversal(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    steps = [-2.0, -1.0, 0.0, 1.0, 2.0]
    imgs = _traversal_stack(shape, steps)
    labels = ["z0 (vol)", "z1 (loc x)", "z2"]
    seg = (imgs > 1.0).astype(np.uint8)
    out = plot_traversal(imgs, tmp_path / "t" / "trav.png", labels, steps, seg_overlay=seg, title="t")
    img = _read_png(out)
    _assert_image(img, 300, 500)
    assert img.shape[1] > 1.4 * img.shape[0]  # 5 steps + diff column vs 3 rows
    nine_by_two = np.repeat(imgs[:, :2], 3, axis=0)
    tall_png = plot_traversal(nine_by_two, tmp_path / "tall.png", labels, [-1, 1], plane="sagittal", show_diff=False)
    tall = _read_png(tall_png)
    _assert_image(tall, 300, 150)
    assert tall.shape[0] > tall.shape[1]  # 9 rows x 2 steps


def test_plot_traversal_multiplane(tmp_path: Path) -> None:
    steps = [-2.0, 0.0, 2.0]
    imgs = _traversal_stack((32, 40, 32), steps)
    labels = ["z0 (vol)", "z1 (loc x)", "z2"]
    both = _read_png(plot_traversal_multiplane(imgs, tmp_path / "m" / "both.png", labels, steps, title="m"))
    _assert_image(both, 500, 600)
    diff = _read_png(plot_traversal_multiplane(imgs, tmp_path / "diff.png", labels, steps, mode="diff"))
    _assert_image(diff, 250, 600)
    assert diff.shape[0] < both.shape[0]  # one row per coordinate instead of two
    const = np.ones((1, 3, 32, 32, 32), dtype=np.float32)  # nothing changes: still a valid figure
    _read_png(plot_traversal_multiplane(const, tmp_path / "const.png", ["z"], steps, mode="images"))
    with pytest.raises(ValueError):
        plot_traversal_multiplane(imgs, tmp_path / "bad.png", labels, steps, mode="nope")


def test_active_units_count_axis_is_the_fraction_axis_in_units() -> None:
    """The right axis is the left one times the latent size, so a constant 128/128 does not float in a +-6 band."""
    import matplotlib.pyplot as plt

    from custom.plots.dashboard import _panel_active_units

    table = {
        "epoch": np.array([5.0, 10.0, 15.0]),
        "diag/au_frac": np.array([np.nan, 0.5, 1.0]),
        "diag/au_count": np.array([np.nan, 64.0, 128.0]),
    }
    fig, ax = plt.subplots()
    _panel_active_units(ax, table)
    twin = [a for a in fig.axes if a is not ax][0]
    lo, hi = ax.get_ylim()
    assert twin.get_ylim() == pytest.approx((lo * 128, hi * 128))
    plt.close(fig)


def test_tumour_weight_panel_starts_at_zero() -> None:
    """A constant weight of 5 reads as 5 on an axis from 0, not as a flat line in a narrow band."""
    import matplotlib.pyplot as plt

    from custom.plots.dashboard import _panel_single

    table = {"epoch": np.arange(1.0, 6.0), "sched/tumour_weight": np.full(5, 5.0)}
    fig, ax = plt.subplots()
    _panel_single("sched/tumour_weight", "Tumour weight", "w", "tab:brown", from_zero=True)(ax, table)
    assert ax.get_ylim() == pytest.approx((0.0, 5.5)) and ax.get_yscale() == "linear"
    plt.close(fig)


def test_figure_interval_counts_epochs_not_validation_passes(tmp_path):
    """figure_interval is in epochs: under val_interval 10, figure_interval 40 draws at epochs 10, 40 and 80."""
    from types import SimpleNamespace

    import torch

    from custom.engines.handlers.figures import ReconstructionFigures

    handler = ReconstructionFigures(str(tmp_path), every=40, save_nifti=False)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=0, output=None))
    kept = {
        "case_id": ["c0"],
        "x": torch.zeros(1, 4, 8, 8, 8),
        "x_hat": torch.zeros(1, 4, 8, 8, 8),
        "seg": None,
        "affine": [None],
    }
    for epoch in range(10, 81, 10):  # validation every 10 epochs
        engine.state.epoch = epoch
        engine.state.output = {"kept": kept}
        handler._reset(engine)
        handler._collect(engine)
        handler._write(engine)
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["recon_epoch0010_c0.png", "recon_epoch0040_c0.png", "recon_epoch0080_c0.png"]
