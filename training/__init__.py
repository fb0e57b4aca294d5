"""Running the library: train state, sharded steps, checkpoints, logging, and the train/eval/sample modes."""
