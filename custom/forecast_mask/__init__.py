"""Forecast tumour masks and images from a volume forecast, and their scores against the true future scans.

* :mod:`custom.forecast_mask.level_set`: the last observed mask grown or shrunk along its signed distance to the
  forecast volume (``forecast_mask``): whole distance shells (``method="level_set"``) or, by default, the exact
  voxel count ranked by distance and a tie-break (``method="ranked"``, :mod:`custom.forecast_mask.ranked`).
* :mod:`custom.forecast_mask.images`: the last observed scan plus the decoded latent change (``anchored_image``).
* :mod:`custom.forecast_mask.metrics`: Dice, HD95, relative volume difference, centroid error, SSIM and PSNR in the
  tumour's box (``mask_scores``, ``image_scores``).
* :mod:`custom.forecast_mask.score`: every held-out target scan of an evaluation split scored against the
  copy-the-last-scan references (``score_forecast_masks``), with strata and paired bootstrap intervals.
* :mod:`custom.forecast_mask.figure`: observed scans, forecast and true future masks side by side.
"""
