"""Volume forecasts from measured (segmentation) volumes: task, baselines, conformal intervals, scoring and report.

* :mod:`custom.forecast.task`: which scans are observed and which are forecast (``make_task``).
* :mod:`custom.forecast.volumetry`: measured-volume baselines (``MEASURED_BASELINES``) and the ``Oracle``.
* :mod:`custom.forecast.conformal`: split-conformal intervals and growth probabilities (``ConformalVolumeIntervals``).
* :mod:`custom.forecast.report`: ``score_forecasts`` and ``write_forecast_report``.

Time unit everywhere: years since the subject's first scan; volumes in mL; ln V is the natural log of mL.
"""
