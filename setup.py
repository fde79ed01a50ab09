"""Symbolic music generation in JAX/Flax: Coconet, MusicVAE, PianoNet, Compound Word Transformer."""

import setuptools

# Tested ranges: the versions these ranges admit were installed together and passed `make test`.
INSTALL_REQUIRES = [
    'jax>=0.10.2,<0.11',
    'flax>=0.12.8,<0.13',
    'optax>=0.2.8,<0.3',
    'orbax-checkpoint>=0.12.8,<0.13',
    'grain>=0.2.18,<0.3',
    'numpy>=2.0,<3',
    'note-seq==0.0.5',
    'protobuf>=5,<8',
    'absl-py>=2.1,<3',
    'ml_collections>=1.1,<2',
    'tensorboardX>=2.6,<3',
    'tqdm>=4.66,<5',
    'matplotlib>=3.9,<4',
    'music21>=9.1,<11',
    'flask>=3.1,<4',  # the studio (python -m experiments.studio)
]

EXTRAS_REQUIRE = {
    # playwright drives Debian's Chromium (/usr/bin/chromium, `make browser-deps`) for the studio's
    # browser tests; they skip without it. No `playwright install`: it would download a browser.
    'test': ['pytest>=8,<10', 'hypothesis>=6.100,<7', 'playwright>=1.65,<2'],
    'audio': [],  # WAV via Debian's fluidsynth + fluid-soundfont-gm when installed; built-in synth otherwise
    'studio': [],  # Flask is a core dependency
}

setuptools.setup(
    name='musicgen-jax',
    version='0.1.0',
    description=__doc__,
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=[
        'common', 'common.*', 'coconet', 'coconet.*', 'musicvae', 'musicvae.*',
        'pianonet', 'pianonet.*', 'cpword', 'cpword.*', 'experiments', 'experiments.*',
        'studio', 'studio.*']),
    package_data={'studio': ['static/*']},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
