"""Convert the FID Inception's pytorch weights into a numpy archive that ``eval.inception_path`` reads.

    python -m tools.convert_inception pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The ``.pth`` (pytorch-fid's release, ``evaluation.inception.WEIGHTS_URL``) is read as untrusted data by
``evaluation.inception.read_state_dict`` (no torch needed, nothing in the file executed, sizes capped);
every name is checked before anything is written, and the archive written is loaded back and checked
against the architecture. (``eval.inception_path`` also takes the ``.pth`` itself; the archive loads
faster.) Bad input ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import sys

import numpy as np

USAGE = "usage: python -m tools.convert_inception IN.pth OUT.npz"


def convert(source: str, out: str) -> int:
  """Writes the state dict of ``source`` (.pth or .npz) to ``out`` (.npz); returns its number of arrays.

  Raises:
    ValueError (CheckpointError included): an unreadable file, or entries that are not the FID Inception's.
    OSError: the files cannot be read or written.
  """
  from evaluation.inception import load_variables, read_state_dict, variables_from_state_dict

  state_dict = read_state_dict(source)
  variables_from_state_dict(state_dict)                 # every name known before anything is written
  np.savez(out, **state_dict)
  load_variables(out)                                   # every entry present, every shape right
  return len(state_dict)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    print(USAGE, file=sys.stderr)
    return 2
  source, out = argv
  try:
    count = convert(source, out)
  except (ValueError, OSError) as e:
    print(f"error: {(str(e).splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
    return 2
  print(f"wrote {out} ({count} arrays); set eval.inception_path={out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
