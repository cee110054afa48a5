"""Synthetic longitudinal meningioma cohort (MNI152 anatomy, dural-based tumours, Gompertz growth).

Entry point: :func:`custom.synth.cohort.generate_cohort`; command line: :func:`custom.synth.cli.synth`.
"""
