"""Feature queues for contrastive learning beyond the batch (MoCo, ALBEF, SIMLA).

The image and text queues hold the teacher's normalised contrastive features of the latest
`size` examples, with each example's `image_key` so that an entry showing the same image as a
query is never counted as its negative. After each step the *global* batch is written at
`pointer` and the pointer advances by the batch, wrapping at `size`; `size` must divide by the
global batch so a write never straddles the end (config_checks refuses anything else). Entries
not yet written carry key -1 and are masked out (`valid`), so the first steps contrast against
the batch alone rather than against zeros.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

EMPTY_KEY = -1  # the image_key of a slot not yet written (real keys are >= 0)


@flax.struct.dataclass
class FeatureQueues:
    image: jax.Array  # [size, dim] float32, unit vectors
    text: jax.Array  # [size, dim]
    image_key: jax.Array  # [size] int32; EMPTY_KEY where nothing was written yet
    pointer: jax.Array  # int32 scalar: the next slot to write

    @classmethod
    def empty(cls, size: int, dim: int) -> FeatureQueues:
        return cls(
            image=jnp.zeros((size, dim), jnp.float32),
            text=jnp.zeros((size, dim), jnp.float32),
            image_key=jnp.full((size,), EMPTY_KEY, jnp.int32),
            pointer=jnp.zeros((), jnp.int32),
        )

    @property
    def size(self) -> int:
        return self.image_key.shape[0]

    @property
    def valid(self) -> jax.Array:
        """[size] bool: the slots that hold a feature."""
        return self.image_key != EMPTY_KEY

    def enqueue(self, image: jax.Array, text: jax.Array, image_key: jax.Array) -> FeatureQueues:
        """The queues with the batch's features written at the pointer (oldest first out)."""
        batch = image_key.shape[0]
        if self.size % batch:
            raise ValueError(f'queue size {self.size} does not divide by the batch {batch}')
        start = self.pointer

        def write(queue, rows):
            return jax.lax.dynamic_update_slice_in_dim(queue, rows.astype(queue.dtype), start, 0)

        return FeatureQueues(
            image=write(self.image, jax.lax.stop_gradient(image)),
            text=write(self.text, jax.lax.stop_gradient(text)),
            image_key=write(self.image_key, image_key.astype(jnp.int32)),
            pointer=(start + batch) % self.size,
        )


def check_size(size: int, global_batch: int, key: str) -> str | None:
    """Why `size` cannot be a queue size for `global_batch` (None when it can)."""
    if size <= 0:
        return f'{key}={size} must be positive'
    if size % global_batch:
        return (
            f'{key}={size} must divide by the global batch {global_batch} (config.batch_size): '
            'each step writes the whole batch, and a write never wraps around the end'
        )
    return None
