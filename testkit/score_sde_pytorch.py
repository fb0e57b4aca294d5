"""The patches that make an exported yang-song/score_sde_pytorch run on CPU, shared by the fixture generator
(tests/reference/make_score_sde_pytorch_fixtures.py, whose docstring explains each) and the timing worker
of benchmarks/networks/networks_vs_reference.py (benchmarks/networks/_reference_torch.py).

Standard library only: it runs under a side Python that has torch and none of the project's dependencies.
"""

import os
import re

PATCHES = [  # (file, old, new): make_score_sde_pytorch_fixtures.py's docstring lists them
    ("models/layerspp.py", "h = F.interpolate(x, (H * 2, W * 2), 'nearest')",
     "h = F.interpolate(x, (H * 2, W * 2), mode='nearest')"),
]


def patch_reference(ref: str) -> None:
  """Applies the CPU patches to the exported reference at ``ref`` (idempotent; checks them)."""
  for name, var in (("upfirdn2d.py", "upfirdn2d_op"), ("fused_act.py", "fused")):
    path = os.path.join(ref, "op", name)
    text = open(path).read()
    patched = re.sub(var + r" = load\((.|\n)*?\n\)\n", var + " = None  # patched: no CUDA build on CPU\n", text,
                     count=1)
    if patched != text:
      open(path, "w").write(patched)
    assert f"{var} = None" in open(path).read(), path
  for name, old, new in PATCHES:
    path = os.path.join(ref, name)
    text = open(path).read()
    if old in text:
      open(path, "w").write(text.replace(old, new))
    assert new in open(path).read(), path
