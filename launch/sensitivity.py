r"""Sensitivity sweep (the paper's Figure 3): LatentCRS's test HIT@10 and NDCG@10 against K
and against the KL weight, one EM seed per point, the other value held at the config's.

Runs (or skips) the workdir's shared stages (prepare, simulate, encode, pretrain), then each
point's own stages into `<workdir>/sensitivity/<point>/` (a K point: K-means intents and the
LatentCRS EM phases; a KL-weight point: the EM phases); finished points are skipped. Writes
`<workdir>/sensitivity/sensitivity.{json,png}` and rebuilds the report, which shows both.
  python -m launch.sensitivity --config=configs/ml_latest_small.py --workdir=workdirs/mls \
      --ks=16,32,64,128,256,512 --kl_weights=0.1,0.5,1,2 [--seed=0]
"""

from absl import flags

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()
_KS = flags.DEFINE_list(
    "ks", ["64", "128", "256", "512", "1024"], "K grid (pretrain.num_intents); empty: none."
)
_KL_WEIGHTS = flags.DEFINE_list(
    "kl_weights",
    ["0.1", "0.5", "1", "2"],
    "KL-weight grid (em.e_kl_weight and em.m_kl_weight together); empty: none.",
)
_SEED = flags.DEFINE_integer("seed", 0, "EM seed of every point.")


def main(argv):
    del argv
    from latentcrs_jax import report
    from latentcrs_jax.evaluation import sensitivity

    ks = sensitivity.parse_ks(_KS.value)
    kl_weights = sensitivity.parse_kl_weights(_KL_WEIGHTS.value)
    common.log_devices()
    config, workdir = _CONFIG.value, _WORKDIR.value
    path = sensitivity.run(config, workdir, ks, kl_weights, _SEED.value, emit=print)
    print(report.sensitivity_table(sensitivity.load(workdir)))
    print(f"sweep: {path} and {path.with_suffix('.png')}")
    print(f"report: {report.build(config, workdir)}")


if __name__ == "__main__":
    common.run(main)
