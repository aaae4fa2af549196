"""Backbone training (the pretrain stage): SASRec with ICLRec's losses or SASRec-CE.

`config` (settings), `data` (host data, padding, negatives), `task` (what every loss family
shares), one task per loss family (`iclrec`, `bce`, `ce`), `stage` (the run and the pipeline
stage), `benchmark` (throughput, not a test).
"""
