"""Training, evaluation and data preparation for the CMRFoundation models (run on a GPU machine)."""
