r"""MovieLens-1M, the standard protocol of the SASRec literature, with SASRec-CE.

All ratings (no >= 4 filter), per-user time order, items with >= 5 ratings, leave-one-out
(valid S[-2], test S[-1]), max length 200, full-softmax cross-entropy at every position, full
ranking with the user's history masked. Positions are counted from each row's first item (as
the published SASRec-CE code's right padding; ICLRec counts them from the last). Published
anchors with this protocol (test NDCG@10 / HIT@10): SASRec-CE 0.182 / 0.315, gSASRec 0.173 /
0.300.

  python -m launch.prepare --config=configs/ml1m_standard.py --workdir=workdirs/ml1m_std
  python -m launch.pretrain --config=configs/ml1m_standard.py --workdir=workdirs/ml1m_std
Expected: 6,040 users, 3,416 items; see README for the measured epochs, wall time and metrics.

Variant `:published`: the model of the published SASRec-CE anchor ("SASRec+", Klenitskiy &
Vasilev, RecSys 2023, github antklen/sasrec-bert4rec-recsys23): the original SASRec block
(pmixer's port: `backbone.block = "pre_ln"`), positions counted from each row's first item
(their right padding, also this config's default), one attention head, dropout 0.1, instead
of ICLRec's post-LN block, 2 heads and dropout 0.2 (README: it did worse here).
Other variants are passed on to configs/ml1m.py.
"""

from configs import ml1m


def get_config(arg: str | None = None):
    variants = list(filter(None, (arg or "").split(",")))
    published = "published" in variants
    config = ml1m.get_config(",".join(v for v in variants if v != "published"))
    config.data.name = "ml-1m-standard"
    config.data.min_rating = 0.0  # All ratings.
    config.data.item_core = 5  # Items with >= 5 ratings (3,416 items, as the literature).
    config.backbone.max_len = 200  # Inputs keep the last 200 items.
    config.backbone.hidden_dropout = 0.2  # SASRec's ML-1M dropout.
    config.backbone.attn_dropout = 0.2  # SASRec's ML-1M dropout.
    config.backbone.positions = "from_start"  # As the published run's right padding (README).
    config.pretrain.loss = "ce"  # SASRec-CE: softmax over all items at every position.
    config.pretrain.mask_history_in_eval = True  # Standard: never recommend a seen item.
    config.pretrain.early_stop_metric = "valid/ndcg@10"  # The reported metric.
    config.pretrain.patience = 20  # Epochs without improvement before stopping.
    config.pretrain.max_epochs = 300  # Upper bound; early stopping ends the run sooner.
    config.pretrain.lr_decay_epochs = (70,)  # LR 1e-3 -> 1e-4 after epoch 70 (README).
    config.pretrain.batch_size = 128  # More updates per epoch than 256; same work per epoch.
    config.pretrain.eval_splits = ("valid", "test")  # Test curve logged for time-to-target.
    config.pretrain.length_buckets = 8  # Widths 25, 50, ..., 200: skips most padding.
    config.pretrain.microbatch = 32  # CE with block-causal attention: ~10% faster than 16.
    if published:
        config.backbone.block = "pre_ln"
        config.backbone.num_heads = 1
        config.backbone.hidden_dropout = 0.1
        config.backbone.attn_dropout = 0.1
    return config
