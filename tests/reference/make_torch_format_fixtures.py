"""Writes tests/reference/data/torch_formats_{legacy,zip}.pth and torch_formats_expected.npz: one state
dict saved by torch.save in both its formats (legacy: ``_use_new_zipfile_serialization=False``, the
format of pre-1.6 files such as pytorch-fid's Inception weights), with the cases a reader must get right:
a transposed view at an offset into a storage shared with another tensor, a slice, a 0-d tensor, an
empty tensor, float16 / float64 / int64 / bool dtypes and an nn.Module state dict (OrderedDict with
``_metadata``). Run with torch installed (a side environment, never the project's):

    /work/torchenv/bin/python tests/reference/make_torch_format_fixtures.py
"""

import collections
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def main():
  torch.manual_seed(0)
  base = torch.randn(6, 5)
  module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.GroupNorm(1, 3), torch.nn.BatchNorm2d(3))
  state = collections.OrderedDict(module.state_dict())
  state.update({"shared.a": base, "shared.t": base[1:].t(), "shared.slice": base[2, 1:4],
                "scalar": torch.tensor(3.5, dtype=torch.float64), "empty": torch.zeros(0, 4),
                "half": torch.randn(7).half(), "long": torch.arange(5), "mask": torch.tensor([True, False])})
  expected = {k.replace(".", "__"): v.numpy() for k, v in state.items()}
  torch.save({"model": state, "step": 12}, os.path.join(OUT, "torch_formats_zip.pth"))
  torch.save({"model": state, "step": 12}, os.path.join(OUT, "torch_formats_legacy.pth"),
             _use_new_zipfile_serialization=False)
  np.savez(os.path.join(OUT, "torch_formats_expected.npz"), **expected)
  print("wrote", sorted(expected))


if __name__ == "__main__":
  main()
