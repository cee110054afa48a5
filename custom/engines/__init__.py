"""Training machinery on MONAI/Ignite engines: the VAE train and eval iterations, network setup (compile, DDP),
distributed helpers, and the handlers in :mod:`custom.engines.handlers`."""
