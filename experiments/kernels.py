"""How much the figures depend on the machine: one training, the same seed and data, under the
CPU kernels another machine would pick (oneDNN limited to AVX2, or oneDNN off), each in a
fresh process, against the default twice (which must agree bit for bit).

    python experiments/kernels.py [--per-class-limit 300] [--epochs 6] > kernels.md

Data from $MEDROBUST_DATA; each run tracks into its own throwaway SQLite store.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import mlflow

VARIANTS = {
    "default": {},
    "default, again": {},
    "oneDNN limited to AVX2 (a CPU without AVX-512)": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN off (TensorFlow's Eigen kernels)": {"TF_ENABLE_ONEDNN_OPTS": "0"},
}
SHOWN = ("clean_accuracy", "clean_macro_recall", "clean_fnr")


def train(env_changes, args, folder):
    uri = f"sqlite:///{folder}/mlflow.db"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, **env_changes)
    subprocess.run([sys.executable, "-m", "medrobust", "train", "--per-class-limit", str(args.per_class_limit),
                    "--epochs", str(args.epochs), "--register", "false"], env=env, check=True)
    client = mlflow.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("medrobust").experiment_id])
    return run.data.metrics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class-limit", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    print("| kernels | " + " | ".join(SHOWN) + " |\n|---|" + "---|" * len(SHOWN))
    for name, changes in VARIANTS.items():
        with tempfile.TemporaryDirectory() as folder:
            m = train(changes, args, folder)
        print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in SHOWN) + " |", flush=True)


if __name__ == "__main__":
    main()
