"""Synthetic longitudinal meningioma cohort (MNI152 anatomy, dural-based tumours, Gompertz growth).

Version 2: imaging biomarkers per subject (:mod:`custom.synth.biomarkers`) and a growth law conditioned on them
(:mod:`custom.synth.history`, :mod:`custom.synth.growth`); user guide in docs/synthetic_cohort.md.
Entry point: :func:`custom.synth.cohort.generate_cohort`; command line: :func:`custom.synth.cli.synth`;
target-vs-measured table: :mod:`custom.synth.calibration`.
"""
