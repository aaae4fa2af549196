"""latentcrs_jax: LatentCRS (arXiv 2503.10703) in JAX/Flax.

A conversational recommender that joins what users say (utterances) with what users do
(interaction sequences) through K discrete latent intents learned by variational EM.
"""

__version__ = "0.1.0"
