"""PNG figures: reconstructions, training dashboard, latent traversals, growth forecasts, one subject across time."""
