#!/usr/bin/env bash
# The GPU check of issue 23, as one script for a lent GPU machine (under 8 minutes there):
#   MEDROBUST_DATA=/path/to/ham10000 benchmarks/gpu_check.sh
# Installs the CUDA build of TensorFlow into .venv, refuses to go on without a visible GPU, then
# (1) bench_train.py's training rates (small_cnn, resnet50, inception_v3 at 64/75 and 224 px),
# (2) pipelines/gpu_check.yaml (ResNet50 at 224 px, FGSM, uap_fast, llt, evaluate thesis), and
# prints each step run's time and the images per second of its work, for benchmarks/README.md.
# Everything it prints goes to ${OUT:-.}/gpu_check.log as well.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-.}/gpu_check.log"
make install >/dev/null
.venv/bin/pip install --quiet "tensorflow[and-cuda]==2.21.0"
.venv/bin/pip uninstall --quiet --yes tensorflow-cpu || true
.venv/bin/python -c "import tensorflow as tf, sys; g = tf.config.list_physical_devices('GPU'); print('GPUs:', g); sys.exit(0 if g else 1)" \
  || { echo "gpu_check: no GPU visible to TensorFlow; nothing measured" >&2; exit 1; }
export MLFLOW_TRACKING_URI="sqlite:///$(mktemp -d)/mlflow.db"
{
  .venv/bin/python benchmarks/bench_train.py --batch 64 --steps 10
  start=$(date +%s)
  .venv/bin/python -m medrobust pipeline pipelines/gpu_check.yaml
  echo "pipeline: $(( $(date +%s) - start )) s"
  .venv/bin/python - <<'PY'
from medrobust import tracking
for r in tracking.search_runs("medrobust"):
    if r["step"] in ("train", "attack", "defend", "evaluate"):
        run = tracking.get_run(r["run_id"])
        print(f"{r['step']:9s} {r['name']:45s} {run['seconds'] or 0:7.1f} s")
PY
} 2>&1 | tee "$LOG"
