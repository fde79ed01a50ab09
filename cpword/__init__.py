"""Compound Word Transformer (Hsiao et al. 2021) and the REMI baseline (Huang & Yang 2020).

tokens.py  NoteSequence <-> CP words / REMI events (16th grid, tempo, chords, emotion, EOS)
model.py   decoder-only transformer: per-family embeddings, type-first heads, relative attention,
           KV cache
train.py   get_task(config) for common.training: tokenised data, per-family losses
sample.py  cached, jitted batched generation with per-family temperature and top-p
configs.py get_config('tiny' | 'small' | 'paper'[, 'remi'][, 'emotion'])
"""
