"""Training machinery on MONAI/Ignite engines: the VAE train and eval iterations, network setup (compile, DDP),
distributed utilities, and the handlers in :mod:`custom.engines.handlers`."""
