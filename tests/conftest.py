"""Test-wide settings: CPU only, quiet TensorFlow-style logs.

Parsed MIDI and converted chorales are cached in $MUSICGEN_CACHE_DIR (default ~/.cache/musicgen),
as for users, so a second `make test` skips the one-off music21 conversion (~30 s).
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
