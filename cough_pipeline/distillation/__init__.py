"""Low-sample-rate students by self-distillation.

* :mod:`.lowrate`: audio as a 1-2 kHz microphone records it, brought back to 16 kHz;
* :mod:`.frontend`: the PANNs-style log-mel patch, paired 16 kHz / low-rate, and computed at the low rate directly;
* :mod:`.data`: the ESC-50 and cough tasks' clips, their grouped folds, and the paired data set;
* :mod:`.loss`: ``α·CE + (1−α)·T²·KL`` against a frozen teacher's logits;
* :mod:`.generations`: teachers and students (raw, fine-tuned, Born-Again, cross-sampling-rate, a third
  generation) through the classifier stage's training loop, and their scores;
* :mod:`.cnn14`: PANNs' CNN14 and its checkpoints; :mod:`.models`: the model-store format of a set of models;
* :mod:`.report`: Table 1, the per-fold figure, the spread reading and per-class changes;
* :mod:`.experiment`: ``make distill-experiment``.
"""
