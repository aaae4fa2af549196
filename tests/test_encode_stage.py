"""The encode stage on the tiny config: shapes, unit norms, order, skip and cache reuse."""

import numpy as np
import pytest

from configs import tiny
from latentcrs_jax.data import dataset
from latentcrs_jax.simulator import stage as simulate_stage
from latentcrs_jax.text import encode
from latentcrs_jax.text import stage as encode_stage

# The session's tiny workdirs: one xdist worker runs all their users (`--dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_workdir")]


def test_encode_stage_outputs(tiny_encoded_workdir):
    ds = dataset.load(tiny_encoded_workdir / "data")
    for split, samples in ds.splits.items():
        emb = encode_stage.load(tiny_encoded_workdir, split)
        assert emb.shape == (len(samples), 384) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    items = encode_stage.load(tiny_encoded_workdir, "items")
    assert items.shape == (ds.num_items + 1, 384)
    assert not items[0].any()  # PAD
    # Rows are in sample order: re-encode a few texts directly and compare.
    texts = simulate_stage.load_texts(tiny_encoded_workdir, "test")[:3]
    direct = encode.TextEncoder.load().encode(texts)
    np.testing.assert_allclose(
        encode_stage.load(tiny_encoded_workdir, "test")[:3], direct, atol=1e-5
    )


def test_encode_stage_skips_when_done(tiny_encoded_workdir):
    manifest = encode_stage.stage_dir(tiny_encoded_workdir) / "manifest.json"
    before = manifest.stat().st_mtime_ns
    summary = encode_stage.run(tiny.get_config(), tiny_encoded_workdir)
    assert "items 1298x384" in summary
    assert manifest.stat().st_mtime_ns == before
