"""Test-wide settings: CPU only, quiet logs, a private cache dir per session."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
