"""models.layers.AttnBlock against the attention formula written out position by position (DDPM, Ho et al.
2020, appendix B; score_sde's AttnBlock): h = x + NIN_3(sum_m softmax_m(q_n . k_m / sqrt(C)) v_m), q, k, v =
NIN_0..2(GroupNorm(x)), divided by sqrt(2) with skip_rescale."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import layers


@pytest.mark.parametrize("skip_rescale,hw", [(False, (3, 4)), (True, (4, 4))])
def test_attn_block_is_softmax_attention_over_positions(skip_rescale, hw):
  x = jax.random.normal(jax.random.key(0), (2, *hw, 8))
  block = layers.AttnBlock(skip_rescale=skip_rescale, init_scale=1.0, groups=2)
  params = block.init(jax.random.key(1), x)
  p = params["params"]
  y = np.asarray(block.apply(params, x), np.float64)

  h = np.asarray(layers.group_norm(8, groups=2).apply({"params": p["GroupNorm_0"]}, x), np.float64)
  dense = lambda name, a: a @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"], np.float64)
  b, n = x.shape[0], hw[0] * hw[1]
  q, k, v = (dense(f"Dense_{i}", h).reshape(b, n, 8) for i in range(3))
  out = np.zeros((b, n, 8))
  for i in range(b):
    for m in range(n):
      logits = k[i] @ q[i, m] / math.sqrt(8)
      weights = np.exp(logits - logits.max())
      out[i, m] = (weights / weights.sum()) @ v[i]
  want = np.asarray(x, np.float64) + dense("Dense_3", out.reshape(b, *hw, 8))
  np.testing.assert_allclose(y, want / math.sqrt(2.0) if skip_rescale else want, rtol=1e-4, atol=1e-4)
