"""The embedded default: MovieLens ml-latest-small, shipped inside the package.

Main job (all stages):
  make run   # = python -m launch.run --config=configs/ml_latest_small.py --workdir=...
Prepare only:
  python -m launch.prepare --config=configs/ml_latest_small.py --workdir=workdirs/mls
Variants (comma-separated, e.g. `:aligned,plus`): `faithful` flips every bug switch to the
authors' behaviour; `plus` is LatentCRS+, the extensions beyond the paper that measured best
(`base.PLUS`); `aligned` the intent-aligned backbone (`base.apply_aligned`: SASRec-CE plus
ICLRec's intent term, K-means every epoch).
"""

from configs import base


def get_config(arg: str | None = None):
    config = base.get_base_config()
    config.data.name = "ml-latest-small"
    config.data.reader = "movielens_csv"  # ratings.csv, movies.csv, tags.csv
    config.data.data_dir = "bundled:ml-latest-small"
    config.data.domain = "movies"
    # A laptop-sized main job: the SASRec-CE backbone (faster and stronger than ICLRec's
    # losses on 603 users), K-means intents on its sequence embeddings, K = 64.
    config.backbone.max_len = 50  # ICLRec's setting for datasets other than ML-1M.
    config.backbone.hidden_dropout = 0.2
    config.backbone.attn_dropout = 0.2
    config.pretrain.loss = "ce"
    config.pretrain.batch_size = 64
    config.pretrain.early_stop_metric = "valid/ndcg@10"
    config.pretrain.num_intents = 64  # K: 603 users support far fewer intents than ML-1M's 512.
    config.pretrain.max_epochs = 60
    config.pretrain.patience = 10
    config.em.batch_size = 64  # 3,453 training samples: more, smaller steps than the paper's 480.
    config.em.eval_batch_size = 64
    config.em.max_epochs = 40
    config.em.patience = 10
    variants = set(filter(None, (arg or "").split(",")))
    unknown = variants - {"faithful", "plus", "aligned"}
    if unknown:
        raise ValueError(
            f"unknown variant(s) {sorted(unknown)}; expected any of 'faithful', 'plus', "
            "'aligned' or nothing"
        )
    if "faithful" in variants:
        base.apply_faithful(config)
    if "plus" in variants:
        base.apply_plus(config)
    if "aligned" in variants:
        base.apply_aligned(config)
    return config
