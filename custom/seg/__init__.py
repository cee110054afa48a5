"""Tumour segmentation stage (bundle ``tumour_seg``): labelled datalists, region masks, volumes, the volume table."""
