"""PianoNet (Angsten 2020): a causal dilated-conv net over flattened binary piano rolls.

data.py (encoding, augmentation), model.py (the net), train.py (TrainTask), generate.py (fast and
naive sampling with edge aversion), configs.py ('tiny', 'small', 'paper'). Fast generation uses
common/fast_conv.py (Fast-WaveNet queues).
"""
