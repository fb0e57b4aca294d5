"""Writes the digits FID's classifier (seed 0) shipped as evaluation/digits_classifier_seed0.npz.

    python -m tools.digits_classifier

Run it under requirements-lock.txt's scikit-learn; tests/test_digits_classifier_cache.py checks that the shipped
file equals a fresh training there. Changing the file changes every digits FID, KID and class share.
"""

from evaluation.digits_classifier import SHIPPED, SHIPPED_SEED, DigitsFeatures, write_shipped


def main():
  write_shipped()
  print(f"wrote {SHIPPED} (seed {SHIPPED_SEED}; test accuracy {DigitsFeatures().test_accuracy:.4f})")


if __name__ == "__main__":
  main()
