"""A tiny config for tests: the first 40 users of the embedded dataset, small models.

python -m launch.run --config=configs/tiny.py --workdir=/tmp/tiny   # about a minute
"""

from configs import ml_latest_small


def get_config(arg: str | None = None):
    config = ml_latest_small.get_config(arg)
    config.data.name = "tiny"
    config.data.user_limit = 40
    config.backbone.hidden = 16
    config.backbone.max_len = 30
    config.pretrain.batch_size = 8
    config.pretrain.eval_batch_size = 8
    config.pretrain.max_epochs = 3
    config.pretrain.num_intents = 4
    config.pretrain.kmeans_redo = 1
    config.pretrain.n_views = 2
    config.em.batch_size = 32
    config.em.eval_batch_size = 8
    config.em.text_hidden = 32
    config.em.max_epochs = 2
    config.em_seeds = (0,)
    # Four text-encoder shapes to compile instead of up to 16 (padding moves embeddings by ~1e-7).
    config.text.buckets = (32, 64, 128, 256)
    return config
