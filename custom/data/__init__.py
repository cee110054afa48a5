"""Data layer: BraTS-MEN discovery, datalists, validation before training, MONAI preprocessing, segmentation factors,
cached datasets (memory, disk or GPU)."""
