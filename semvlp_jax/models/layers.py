"""Transformer building blocks with logical axis names on every parameter.

Post-LN blocks (BERT layout) so BERT checkpoints map onto them by name. Every kernel, bias and
LayerNorm parameter carries logical axis names (`embed`, `heads`, `mlp`, `vocab`, ...); the
config's rules table maps them onto mesh axes, so the model code never names a mesh axis.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

# Embedding tables: BERT's N(0, 0.02).
EMBEDDING_INIT = nnx.initializers.normal(stddev=0.02)
# Token type ids: text 0, image 1 (one type table, `TextEmbeddings.token_type`, serves both).
TEXT_TYPE, IMAGE_TYPE = 0, 1
# Dense kernels: fan-in scaled (LeCun normal). BERT's fixed 0.02 suits width 768 but leaves a
# narrow model's attention logits near zero (uniform attention), which stalls cross-modal
# alignment; pre-trained weights, when loaded, replace the initial values anyway.
KERNEL_INIT = nnx.initializers.lecun_normal()


@dataclasses.dataclass(frozen=True)
class Numerics:
    """The two choices where implementations of BERT differ and a loaded checkpoint must be
    computed as it was trained: the GELU (`exact`: erf, BERT's `gelu`; `tanh`: the approximation,
    HF's `gelu_new`) and the LayerNorm epsilon (BERT: 1e-12). `config.model.gelu` and
    `config.model.layer_norm_eps`; the layers a BERT checkpoint fills take them."""

    gelu: str = 'exact'
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_config(cls, model_config) -> Numerics:
        return cls(model_config.get('gelu', 'exact'), model_config.get('layer_norm_eps', 1e-12))

    def activation(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.gelu == 'tanh')


GELUS = ('exact', 'tanh')
# The default: what BERT computes (exact GELU, epsilon 1e-12).
BERT_NUMERICS = Numerics()


def logical(init: nnx.Initializer, *axes: str | None) -> nnx.Initializer:
    """Wraps `init` so the created parameter carries the logical axis names `axes`."""
    # eager_sharding=False: parameters are created unsharded (or under jit with out_shardings);
    # the mesh is applied from the rules table, never from inside the model.
    return nnx.with_partitioning(init, axes, eager_sharding=False)


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str, str],
    *,
    rngs: nnx.Rngs,
    use_bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> nnx.Linear:
    """A Linear layer whose kernel is named `axes` and whose bias is named `axes[1]`.

    Parameters are float32; `dtype` is the compute (and output) dtype.
    """
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=logical(KERNEL_INIT, *axes),
        bias_init=logical(nnx.initializers.zeros, axes[1]),
        rngs=rngs,
    )


def layer_norm(
    features: int, *, rngs: nnx.Rngs, eps: float = 1e-12, dtype: jnp.dtype = jnp.float32
) -> nnx.LayerNorm:
    """LayerNorm whose statistics are computed in float32 whatever the output `dtype`."""
    return nnx.LayerNorm(
        features,
        epsilon=eps,
        dtype=dtype,
        scale_init=logical(nnx.initializers.ones, 'norm'),
        bias_init=logical(nnx.initializers.zeros, 'norm'),
        rngs=rngs,
    )


def dropout(x: jax.Array, layer: nnx.Dropout, rngs: nnx.Rngs | None) -> jax.Array:
    """Dropout that is the identity when no rngs are given (evaluation)."""
    return layer(x, deterministic=rngs is None, rngs=rngs)


class Attention(nnx.Module):
    """Multi-head attention of `queries` over `context`, with residual and post-LayerNorm.

    Used both as self-attention (context = queries) and as the pluggable cross-attention block.
    `hidden_size` must divide by `num_heads` (config_checks says so before anything is built).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        dropout_rate: float,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        numerics: Numerics = BERT_NUMERICS,
    ):
        self.num_heads = num_heads
        self.query = dense(hidden_size, hidden_size, ('embed', 'heads'), rngs=rngs, dtype=dtype)
        self.key = dense(hidden_size, hidden_size, ('embed', 'heads'), rngs=rngs, dtype=dtype)
        self.value = dense(hidden_size, hidden_size, ('embed', 'heads'), rngs=rngs, dtype=dtype)
        self.output = dense(hidden_size, hidden_size, ('heads', 'embed'), rngs=rngs, dtype=dtype)
        self.norm = layer_norm(hidden_size, rngs=rngs, eps=numerics.layer_norm_eps, dtype=dtype)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(
        self, queries: jax.Array, context: jax.Array, context_mask: jax.Array, rngs: nnx.Rngs | None
    ) -> jax.Array:
        """queries [batch, q_len, hidden], context [batch, kv_len, hidden], context_mask [batch, kv_len]."""
        batch, q_len, hidden = queries.shape
        head_dim = hidden // self.num_heads

        def heads(x):
            return x.reshape(batch, x.shape[1], self.num_heads, head_dim)

        q, k, v = heads(self.query(queries)), heads(self.key(context)), heads(self.value(context))
        mask = context_mask[:, None, None, :].astype(bool)  # [batch, heads, queries, kv_len]
        attended = jax.nn.dot_product_attention(q, k, v, mask=mask).reshape(batch, q_len, hidden)
        return self.norm(queries + dropout(self.output(attended), self.dropout, rngs))

    def inspect(
        self, queries: jax.Array, context: jax.Array, context_mask: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """What `__call__` computes inside, without dropout, for diagnostics: the attention
        probabilities [batch, heads, q_len, kv_len] and the update [batch, q_len, hidden] that is
        added to `queries` before the LayerNorm (`__call__` = norm(queries + update))."""
        batch, q_len, hidden = queries.shape
        head_dim = hidden // self.num_heads

        def heads(x):  # [batch, len, hidden] -> [batch, heads, len, head_dim]
            return x.reshape(batch, x.shape[1], self.num_heads, head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(queries)), heads(self.key(context)), heads(self.value(context))
        logits = (q @ k.swapaxes(-1, -2)).astype(jnp.float32) / jnp.sqrt(head_dim)
        logits = jnp.where(context_mask[:, None, None, :].astype(bool), logits, -1e30)
        probs = jax.nn.softmax(logits, axis=-1)
        attended = (probs.astype(v.dtype) @ v).transpose(0, 2, 1, 3).reshape(batch, q_len, hidden)
        return probs, self.output(attended)


class FeedForward(nnx.Module):
    """GELU MLP with residual and post-LayerNorm."""

    def __init__(
        self,
        hidden_size: int,
        mlp_size: int,
        dropout_rate: float,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        numerics: Numerics = BERT_NUMERICS,
    ):
        self.numerics = numerics
        self.expand = dense(hidden_size, mlp_size, ('embed', 'mlp'), rngs=rngs, dtype=dtype)
        self.contract = dense(mlp_size, hidden_size, ('mlp', 'embed'), rngs=rngs, dtype=dtype)
        self.norm = layer_norm(hidden_size, rngs=rngs, eps=numerics.layer_norm_eps, dtype=dtype)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        y = self.contract(self.numerics.activation(self.expand(x)))
        return self.norm(x + dropout(y, self.dropout, rngs))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x [batch, len, hidden] over positions where mask [batch, len] is set."""
    weights = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
