"""Export a trained bundle as a self-contained zip in the MONAI model-zoo form.

Layout of ``<out>/<name>.zip``::

    <name>/configs/*.json, logging.conf      (bundle_root rewritten to "<name>", trained sizes baked in)
    <name>/configs/metadata.json             (network_data_format shapes and latent z_dim: the trained sizes)
    <name>/models/model.pt                   (network weights, state_dict)
    <name>/models/model_config.json          (the sizes the weights were trained with)
    <name>/models/model.ts                   (TorchScript of network_def, traced by ``monai.bundle ckpt_export``)
    <name>/docs/README.md, small figures     (no run history: docs/runs/, *.npz and files over 1 MB stay out)
    <name>/LICENSE
    <name>/custom/...                        (this package: the code the configs' "_target_" names need)
    <name>/encoder/models/...                (latent_ode only: the encoder bundle's weights and sizes that the
                                              forecaster was trained on, from model_config.json's encoder_bundle)

The trained sizes come from ``model_config.json`` beside the weights (written by training); explicit overrides
must agree with it. Why the code is inside the bundle: MONAI's ``ConfigWorkflow.run`` puts the bundle root
(the parent of ``configs/``) on ``sys.path`` before it instantiates anything, so ``"_target_": "custom...."``
resolves to the copy shipped in the zip; no checkout of this repository is needed, only ``requirements.txt``.
Run it from the folder the zip was unpacked in::

    unzip vae_baseline.zip && python -m monai.bundle run \\
        --config_file vae_baseline/configs/inference.json --datalist /data/datalist.json --output_dir out

``model.ts`` is made by ``monai.bundle.ckpt_export network_def --use_trace True`` on the exported configs (so
the metadata.json and inference.json embedded in it state the trained sizes); export fails if the traced
module's output differs from the eager ``network_def`` (``allclose``, atol 1e-5) on a random input.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["export_bundle", "MAX_DOC_BYTES"]

_PACKAGE = Path(__file__).resolve().parent
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp")
#: docs files larger than this are not exported (run history, large figures)
MAX_DOC_BYTES = 1_000_000
#: docs content that is run history, not documentation
_RUN_HISTORY = ("runs", "*.npz", "*.pt", "*.ckpt", "events.out.tfevents.*")


def export_bundle(bundle: str, out: str, model: str | None = None, **overrides: Any) -> str:
    """Zip ``bundle`` (a folder with ``configs/``) into ``<out>/<name>.zip``; returns the zip's path.

    Args:
        bundle: bundle folder, e.g. ``bundles/vae_baseline``.
        out: output folder (created).
        model: weights to ship (default ``<bundle>/models/model.pt``); ``model_config.json`` beside them gives
            the trained sizes.
        **overrides: top-level config values (e.g. ``spatial_size=[32,32,32]``, ``z_dim=16``) written into every
            copied config that has the key, and into ``metadata.json``; a value that contradicts
            ``model_config.json`` is an error.

    Raises:
        FileNotFoundError: no ``configs/inference.json`` or no weights file.
        ValueError: an override contradicts the recorded ``model_config.json``.
    """
    src = Path(bundle).resolve()
    name = src.name
    configs = src / "configs"
    if not (configs / "inference.json").is_file():
        raise FileNotFoundError(f"{src} is not a bundle: {configs / 'inference.json'} does not exist")
    weights = Path(model) if model else src / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no trained weights at {weights}: train the bundle first or pass --model")
    values = _trained_values(weights.parent / "model_config.json", overrides)
    encoder = _encoder_models(values)
    if encoder is not None:
        values["encoder_bundle"] = "$@bundle_root + '/encoder'"  # wherever the bundle is unpacked
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        shutil.copytree(configs, root / "configs", ignore=_IGNORE)
        if encoder is not None:
            _copy_models(encoder, root / "encoder" / "models")
            values.update(_forecast_sizes(configs / "inference.json"))
        _rewrite_configs(root / "configs", name, values)
        (root / "models").mkdir()
        shutil.copy2(weights, root / "models" / "model.pt")
        for extra in ("model_config.json", "latent_partition.json"):
            if (weights.parent / extra).is_file():
                shutil.copy2(weights.parent / extra, root / "models" / extra)
        _copy_docs(src, root)
        shutil.copytree(_PACKAGE, root / "custom", ignore=_IGNORE)
        trace_network(root)
        target = out_dir / f"{name}.zip"
        partial = target.with_suffix(".zip.tmp")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root.parent).as_posix())
        partial.replace(target)  # atomic: a half-written zip never carries the final name
    logger.info("exported %s -> %s (%.1f MB)", src, target, target.stat().st_size / 1e6)
    return str(target)


def _trained_values(model_config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Recorded training sizes, with ``overrides`` added; an override that differs from a recorded value raises."""
    recorded = json.loads(model_config.read_text()) if model_config.is_file() else {}
    if not recorded:
        logger.warning("%s not found: the exported configs keep their defaults except %s", model_config, overrides)
    for key, value in overrides.items():
        if key in recorded and json.dumps(recorded[key]) != json.dumps(value):
            raise ValueError(
                f"--{key} {value!r} contradicts {model_config}, which records {recorded[key]!r} for the trained weights"
            )
    from custom.engines.handlers.model_config import network_kwargs

    values = {**recorded, **network_kwargs(recorded), **overrides}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _encoder_models(values: dict[str, Any]) -> Path | None:
    """The ``models`` folder of the encoder a forecaster was trained on (``encoder_bundle`` in its model_config),
    or None for a bundle without one; a recorded encoder without weights is an error."""
    recorded = values.get("encoder_bundle")
    if not recorded:
        return None
    for base in (Path.cwd(), _PACKAGE.parent):
        models = (base / str(recorded)).resolve() / "models"
        if (models / "model.pt").is_file():
            return models
    raise FileNotFoundError(
        f"model_config.json names the encoder bundle {recorded!r}, but {recorded}/models/model.pt does not exist: "
        "export from the folder the forecaster was trained in"
    )


def _copy_models(models: Path, dest: Path) -> None:
    """The weights and the records needed to rebuild them (model_config.json, latent_partition.json)."""
    dest.mkdir(parents=True)
    for extra in ("model.pt", "model_config.json", "latent_partition.json"):
        if (models / extra).is_file():
            shutil.copy2(models / extra, dest / extra)


def _forecast_sizes(inference: Path) -> dict[str, int]:
    """``n_observed`` / ``n_targets`` of a forecasting inference config (the packed network's layout)."""
    cfg = json.loads(inference.read_text())
    return {k: int(cfg[k]) for k in ("n_observed", "n_targets") if isinstance(cfg.get(k), int)}


def _rewrite_configs(folder: Path, name: str, values: dict[str, Any]) -> None:
    """``bundle_root`` -> ``name`` (relative to the unzip folder); trained values into configs and metadata."""
    for path in sorted(folder.rglob("*.json")):
        cfg = json.loads(path.read_text())
        if path.name == "metadata.json":
            _update_metadata(cfg, values)
        else:
            if "bundle_root" in cfg:
                cfg["bundle_root"] = name
            for key, value in values.items():
                if key in cfg:
                    cfg[key] = value
        path.write_text(json.dumps(cfg, indent=4) + "\n")


def _update_metadata(meta: dict[str, Any], values: dict[str, Any]) -> None:
    """Shapes, latent size and partition, and the sizes quoted in the free-text fields, set to the trained ones."""
    fmt = meta.get("network_data_format", {})
    if "spatial_size" in values:
        shape = [int(s) for s in values["spatial_size"]]
        for group in ("inputs", "outputs"):
            for spec in fmt.get(group, {}).values():
                if spec.get("type") == "image":
                    spec["spatial_shape"] = shape
        text = "^3" if len(set(shape)) == 1 else ""
        cube = f"{shape[0]}^3" if text else "x".join(str(s) for s in shape)
        for field in ("description", "image_classes"):
            if isinstance(meta.get(field), str):
                meta[field] = re.sub(r"\b\d+\^3\b", cube, meta[field])
    if "z_dim" in values:
        if isinstance(meta.get("latent"), dict):
            meta["latent"]["z_dim"] = int(values["z_dim"])
        for field in ("description", "image_classes"):
            if isinstance(meta.get(field), str):
                meta[field] = re.sub(r"z_dim \d+", f"z_dim {int(values['z_dim'])}", meta[field])
    if "spacing" in values and isinstance(values["spacing"], (int, float)):
        for field in ("description", "image_classes"):
            if isinstance(meta.get(field), str):
                meta[field] = re.sub(r"\b\d+(\.\d+)? mm isotropic", f"{values['spacing']:g} mm isotropic", meta[field])
    if "partition" in values and isinstance(meta.get("latent"), dict):
        meta["latent"]["partition"] = values["partition"]
    if fmt.get("inputs", {}).get("image", {}).get("format") == "packed" and "z_dim" in values:
        from custom.ode.packed import packed_data_format

        sizes = {k: int(values.get(k, meta.get("forecaster", {}).get(k, 1))) for k in ("n_observed", "n_targets")}
        meta["network_data_format"] = packed_data_format(int(values["z_dim"]), **sizes)
        meta["forecaster"] = {
            "z_dim": int(values["z_dim"]),
            **sizes,
            **{k: values[k] for k in ("hidden", "vol_index", "grid_size", "method", "step_size") if k in values},
        }


def _copy_docs(src: Path, root: Path) -> None:
    """The bundle's docs without run history (``docs/runs``, latents, checkpoints) or files over 1 MB."""
    docs = root / "docs"
    if (src / "docs").is_dir():

        def ignore(folder: str, names: list[str]) -> set[str]:
            skip = set(_IGNORE(folder, names)) | set(shutil.ignore_patterns(*_RUN_HISTORY)(folder, names))
            for n in names:
                p = Path(folder) / n
                if p.is_file() and p.stat().st_size > MAX_DOC_BYTES:
                    logger.info("export: %s (%.1f MB) left out of the docs", p, p.stat().st_size / 1e6)
                    skip.add(n)
            return skip

        shutil.copytree(src / "docs", docs, ignore=ignore)
    docs.mkdir(exist_ok=True)
    readme = docs / "README.md"
    if not readme.exists():
        readme.write_text(
            f"# {root.name}\n\nExported MONAI bundle. From the folder holding `{root.name}/`:\n\n"
            f"    python -m monai.bundle run --config_file {root.name}/configs/inference.json "
            "--datalist DATALIST.json --output_dir OUT\n\n"
            "The code the configs reference is in `custom/` (on sys.path when MONAI runs the bundle).\n"
        )
    for lic in (src / "LICENSE", _PACKAGE.parent / "LICENSE"):
        if lic.is_file():
            shutil.copy2(lic, root / "LICENSE")
            break


def input_shape(metadata_file: Path, key: str | None = None) -> list[int]:
    """``[1, num_channels, *spatial_shape]`` of an input of ``network_data_format`` (the first when ``key`` is None)."""
    inputs = json.loads(Path(metadata_file).read_text())["network_data_format"]["inputs"]
    spec = inputs[key] if key else next(iter(inputs.values()))
    return [1, int(spec["num_channels"]), *(int(s) for s in spec["spatial_shape"])]


def trace_network(root: Path, net_id: str = "network_def") -> Path:
    """``monai.bundle.ckpt_export`` of ``net_id`` (traced) to ``<root>/models/model.ts``, checked against eager mode.

    Runs MONAI's own exporter on the exported configs, so the ``metadata.json`` and ``inference.json`` that it
    embeds in the TorchScript file are the exported ones (trained sizes).
    """
    from monai.bundle import ConfigParser, ckpt_export

    configs, models = root / "configs", root / "models"
    shape = input_shape(configs / "metadata.json")
    ts_path = models / "model.ts"
    common = {"bundle_root": str(root), "device": "$torch.device('cpu')"}
    ckpt_export(
        net_id=net_id,
        filepath=str(ts_path),
        ckpt_file=str(models / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        use_trace=True,
        input_shape=shape,
        converter_kwargs={"verify": False},
        **common,
    )
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.update(common)
    net = parser.get_parsed_content(net_id)
    net.load_state_dict(torch.load(models / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    traced = torch.jit.load(str(ts_path), map_location="cpu")
    gen = torch.Generator().manual_seed(0)
    packed = len(shape) == 2  # a packed series (times, flags, latents): uniform [0, 1) keeps it well posed
    probe = torch.rand(shape, generator=gen) if packed else torch.randn(shape, generator=gen)
    with torch.no_grad():
        if not torch.allclose(traced(probe), net(probe), atol=1e-5):
            raise RuntimeError(f"traced {ts_path} output differs from the eager {net_id}: export aborted")
    return ts_path
