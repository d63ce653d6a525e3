"""`python -m rmas_jax serve`: a local web app to ask a system questions, watch its rounds, and inspect what its
latent thoughts are close to in each agent's vocabulary."""
