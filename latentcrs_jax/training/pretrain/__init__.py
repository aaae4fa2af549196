"""Backbone training (the pretrain stage): SASRec with ICLRec's losses, SASRec-CE, or
SASRec-CE plus ICLRec's intent term.

`config` (settings), `data` (host data, padding, negatives), `task` (what every loss family
shares), one task per loss family (`iclrec`, `bce`, `ce`, `ce_intent`; `intent` holds what the
two with ICLRec's intent term share), `stage` (the run and the pipeline stage), `benchmark`
(throughput, not a test).
"""
