"""One process of the multi-process EM test (run by tests/test_em_parallel.py).

Usage: python tests/distributed_em_worker.py OUT_DIR  (with the JAX_* variables of
latentcrs_jax.training.distributed set, or none for a single process). Writes
OUT_DIR/final_metrics.json and OUT_DIR/losses.json from process 0.
"""

import json
import pathlib
import sys

sys.path[:0] = [str(pathlib.Path(__file__).parent), str(pathlib.Path(__file__).parents[1])]

import jax  # noqa: E402

from latentcrs_jax.training import distributed, em, em_stage, sharding  # noqa: E402


def main(out_dir: str) -> None:
    distributed.maybe_initialize()
    from em_helpers import small_config, synthetic_inputs

    splits, item_emb, intents = synthetic_inputs()
    inputs = em_stage.EMInputs(splits, item_emb, intents, None, upstream="synthetic")
    cfg = small_config(max_epochs=2)
    out = pathlib.Path(out_dir)
    final = em_stage.run_phase(
        cfg, em.main_plan()[2], inputs, out / "em", None, sharding.make_mesh()
    )
    if jax.process_index() == 0:
        rows = [json.loads(r) for r in (out / "em" / "metrics.jsonl").read_text().splitlines()]
        losses = [r["train/loss"] for r in rows if "train/loss" in r]
        (out / "final_metrics.json").write_text(json.dumps(final))
        (out / "losses.json").write_text(json.dumps(losses))
        (out / "devices.json").write_text(
            json.dumps({"processes": jax.process_count(), "devices": jax.device_count()})
        )


if __name__ == "__main__":
    main(sys.argv[1])
