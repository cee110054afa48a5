"""Export a trained bundle as a self-contained zip in the MONAI model-zoo form.

Layout of ``<out>/<name>.zip``::

    <name>/configs/*.json, logging.conf      (bundle_root rewritten to "<name>", overrides baked in)
    <name>/configs/metadata.json             (network_data_format shapes and latent z_dim follow the overrides)
    <name>/models/model.pt                   (network weights, state_dict)
    <name>/models/model.ts                   (TorchScript of x -> decode(mu(x)), traced)
    <name>/docs/README.md
    <name>/LICENSE
    <name>/custom/...                        (this package: the code the configs' "_target_" names need)

Why the code is inside the bundle: MONAI's ``ConfigWorkflow.run`` puts the bundle root (the parent of
``configs/``) on ``sys.path`` before it instantiates anything, so ``"_target_": "custom...."`` resolves to
the copy shipped in the zip; no checkout of this repository is needed, only ``requirements.txt``.
Run it from the folder the zip was unpacked in::

    unzip vae_baseline.zip && python -m monai.bundle run \\
        --config_file vae_baseline/configs/inference.json --datalist /data/datalist.json --output_dir out

``model.ts`` is ``torch.jit.trace`` of :class:`custom.networks.ReconstructionNet` (a single-tensor
deterministic view of the VAE) on a zero input of the bundle's input shape; export fails if the traced
module's output differs from eager mode (``allclose``, atol 1e-5) on a random input.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["export_bundle"]

_PACKAGE = Path(__file__).resolve().parent
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp")


def export_bundle(bundle: str, out: str, model: str | None = None, **overrides: Any) -> str:
    """Zip ``bundle`` (a folder with ``configs/``) into ``<out>/<name>.zip``; returns the zip's path.

    Args:
        bundle: bundle folder, e.g. ``bundles/vae_baseline``.
        out: output folder (created).
        model: weights to ship (default ``<bundle>/models/model.pt``).
        **overrides: top-level config values the weights were trained with (e.g. ``spatial_size=[32,32,32]``,
            ``z_dim=16``); written into every copied config that has the key, and into ``metadata.json``.

    Raises:
        FileNotFoundError: no ``configs/inference.json`` or no weights file.
    """
    src = Path(bundle).resolve()
    name = src.name
    configs = src / "configs"
    if not (configs / "inference.json").is_file():
        raise FileNotFoundError(f"{src} is not a bundle: {configs / 'inference.json'} does not exist")
    weights = Path(model) if model else src / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no trained weights at {weights}: train the bundle first or pass --model")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        shutil.copytree(configs, root / "configs", ignore=_IGNORE)
        _rewrite_configs(root / "configs", name, overrides)
        (root / "models").mkdir()
        shutil.copy2(weights, root / "models" / "model.pt")
        _copy_docs(src, root)
        shutil.copytree(_PACKAGE, root / "custom", ignore=_IGNORE)
        _trace_model(root, weights)
        target = out_dir / f"{name}.zip"
        partial = target.with_suffix(".zip.tmp")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root.parent).as_posix())
        partial.replace(target)  # atomic: a half-written zip never carries the final name
    logger.info("exported %s -> %s", src, target)
    return str(target)


def _rewrite_configs(folder: Path, name: str, overrides: dict[str, Any]) -> None:
    """``bundle_root`` -> ``name`` (relative to the unzip folder); overrides into configs and metadata."""
    for path in sorted(folder.glob("*.json")):
        cfg = json.loads(path.read_text())
        if path.name == "metadata.json":
            _update_metadata(cfg, overrides)
        else:
            if "bundle_root" in cfg:
                cfg["bundle_root"] = name
            for key, value in overrides.items():
                if key in cfg or path.name in ("inference.json", "train.json"):
                    cfg[key] = value
        path.write_text(json.dumps(cfg, indent=4) + "\n")


def _update_metadata(meta: dict[str, Any], overrides: dict[str, Any]) -> None:
    fmt = meta.get("network_data_format", {})
    if "spatial_size" in overrides:
        shape = [int(s) for s in overrides["spatial_size"]]
        for group in ("inputs", "outputs"):
            for spec in fmt.get(group, {}).values():
                spec["spatial_shape"] = shape
    if "z_dim" in overrides and isinstance(meta.get("latent"), dict):
        meta["latent"]["z_dim"] = int(overrides["z_dim"])


def _copy_docs(src: Path, root: Path) -> None:
    docs = root / "docs"
    if (src / "docs").is_dir():
        shutil.copytree(src / "docs", docs, ignore=_IGNORE)
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


def _trace_model(root: Path, weights: Path) -> None:
    """Build the inference network from the exported config, load the weights, trace, check, save."""
    from monai.bundle import ConfigParser

    from custom.networks import ReconstructionNet

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["device"] = "$torch.device('cpu')"
    vae = parser.get_parsed_content("network_def")
    vae.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net = ReconstructionNet(vae).eval()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    spec = meta["network_data_format"]["inputs"]["image"]
    shape = (1, int(spec["num_channels"]), *(int(s) for s in spec["spatial_shape"]))
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.zeros(shape), check_trace=False)
        probe = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        if not torch.allclose(traced(probe), net(probe), atol=1e-5):
            raise RuntimeError("traced model.ts output differs from the eager network: export aborted")
    torch.jit.save(traced, str(root / "models" / "model.ts"))
