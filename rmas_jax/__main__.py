import sys

from rmas_jax.cli import main

sys.exit(main())
