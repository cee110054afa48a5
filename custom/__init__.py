"""Python components behind the meningioma growth-modelling MONAI bundles.

Bundle configs reference these with ``"_target_": "custom.<module>.<Name>"``; the command line
lives in :mod:`custom.__main__` (``python -m custom --help``).
"""

__version__ = "0.1.0"
