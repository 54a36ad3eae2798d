# The project's image: medrobust with its pinned dependencies on Python 3.11. Used by
# `mlflow run deploy/kubernetes --backend kubernetes` (its MLproject's docker_env names it) and
# by any worker host (docs/scaling.md).
#
#   docker build -t medrobust .                      # CPU (tensorflow-cpu, as pyproject.toml pins)
#   docker build -t medrobust:gpu --build-arg GPU=true .   # the CUDA build of the same TensorFlow
FROM python:3.11-slim
ARG GPU=false
WORKDIR /opt/medrobust
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
 && if [ "$GPU" = "true" ]; then pip uninstall -y tensorflow-cpu && pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0"; fi
COPY MLproject python_env.yaml conda.yaml ./
COPY pipelines ./pipelines
# Data and the decoded-image cache are mounted, never baked in (HAM10000 is CC BY-NC 4.0).
ENV MEDROBUST_DATA=/data/ham10000 \
    MEDROBUST_CACHE=/cache
