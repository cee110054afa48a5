"""Latent Neural ODE: trajectory encoding (cached), Gompertz log-volume dynamics, batched irregular-time solves,
baselines, metrics, training, evaluation and single-subject forecasts."""
