"""Coconet (Huang et al., "Counterpoint by Convolution", ISMIR 2017) and the Bach Doodle model.

data.py (SATB arrays <-> piano rolls <-> NoteSequences), model.py (the conv net), train.py (the
orderless NADE loss for the shared loop), sample.py (independent / ancestral / annealed Gibbs and
the tasks), evaluate.py (note- and frame-wise NLL), configs.py (tiny / small / doodle / paper).
"""
