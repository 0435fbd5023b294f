#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything the
# library, the command line and the tests need. Safe to run again.
#
# PyTorch: the CPU build 2.13.0 by default (a plain `pip install torch` pulls several GB
# of CUDA packages). Choose another with CMRFM_TORCH, e.g. CMRFM_TORCH="torch==2.13.0"
# together with PIP_INDEX_URL / PIP_EXTRA_INDEX_URL pointing at the build you want.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" "${CMRFM_TORCH:-torch==2.13.0}"
fi
# Editable, so the library (CMRFoundationLib) and the training package (Training/cmrtrain) are
# imported from this checkout. The train extra brings MONAI (training only); the test extra
# brings pytest, ruff, MONAI (the training code is tested), slicer-core (Slicer's MRML
# without the application), which the scene layer (CMRFoundationLib.scene) and the batch
# script need outside Slicer, and the cohort extra (Dask, pyarrow, tqdm: `cmrfm batch`). The
# constraints file pins what the Slicer module's installer installs, so the tests run with the
# versions Slicer users get (Testing/Python/test_installation.py checks it).
"${pip[@]}" --constraint Resources/Requirements/slicer-constraints.txt -e ".[test,train]"
