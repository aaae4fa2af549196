"""PyTorch's default initialisers, for parity with the authors' freshly built layers.

`torch.nn.Linear` draws weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a [fan_in, fan_out] kernel.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """Bias initialiser U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchDense(nn.Module):
    """nn.Dense with torch.nn.Linear's default initialisation."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        return nn.Dense(
            self.features,
            use_bias=self.use_bias,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in),
        )(x)
