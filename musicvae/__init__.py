"""MusicVAE (Roberts et al., ICML 2018): a hierarchical latent vector model for music.

data.py (melody/drums/trio tokens), model.py (BiLSTM encoder, flat and hierarchical decoders),
train.py (loss and TrainTask), sample.py (encode/decode/interpolate/attribute vectors),
configs.py (tiny ... mel_16bar_hier).
"""
