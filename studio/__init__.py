"""The studio: a small local web application over the trained models (docs/studio.md).

  python -m experiments.studio                 # http://127.0.0.1:8000/

studio.engine holds the model side (loading, decoding a population, harmonizing a melody,
rendering MIDI/WAV/PNG bytes) and knows nothing of the web; studio.app builds the Flask
application from studio.sessions (sessions, outputs by opaque id), studio.requests (checking
request bodies) and the per-page blueprints in studio/routes; studio/static holds its plain HTML,
JS and CSS.
"""
