"""rmas-jax: Recursive Multi-Agent Systems in JAX/Flax."""

__version__ = "0.1.0"
