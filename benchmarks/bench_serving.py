"""A bounded load test of `mlflow models serve`: for each model, a fixed number of concurrent
clients send requests for a fixed time, then stop; throughput and p50 / p95 latency, and every
failed request counted.

Each request carries `--images` HAM10000 test images as base64 JPEG bytes in the `image` column
(a client that shares no disk with the server). Clients and server share this machine's cores.

Run by hand (never in the test suite), against models in the tracking store:
  MLFLOW_TRACKING_URI=sqlite:///mlflow.db .venv/bin/python benchmarks/bench_serving.py \\
      --model-uri models:/medrobust-small_cnn/1 --model-uri models:/medrobust-small_cnn/2 \\
      --data ../shared/data/ham10000 --clients 4 --seconds 30
"""

import argparse
import base64
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import model_server  # noqa: E402  (the test suite's own server harness)


def request_body(files):
    images = [base64.b64encode(Path(f).read_bytes()).decode() for f in files]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}).encode()


def post(url, body):
    request = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        payload = json.loads(response.read())
        return response.status, payload


def load(url, bodies, clients, seconds):
    """(latencies in s of the requests that answered 200, failures, wall s): `clients` threads
    post in turn the bodies, each as fast as answered, until `seconds` have passed."""
    latencies, failures, lock = [], [], threading.Lock()
    stop = time.monotonic() + seconds

    def client(k):
        i = k
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status, _ = post(url, bodies[i % len(bodies)])
                ok = status == 200
            except (urllib.error.URLError, OSError) as e:
                ok, status = False, repr(e)
            with lock:
                (latencies.append(time.perf_counter() - start) if ok else failures.append(status))
            i += clients

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.asarray(latencies), failures, time.monotonic() - started


def in_process(uri, files, repeats=20):
    """ms per one-image call of the model's network through model.predict and called directly
    (what a served request of up to DIRECT_CALL_IMAGES images does), side by side."""
    from medrobust import tracking
    from medrobust.predict import read_request

    classifier = tracking.load_classifier(uri)
    x = read_request(classifier, pd.DataFrame({"path": [str(files[0])]}))
    out = {}
    for direct in (False, True):
        classifier.logits(x, direct=direct)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            classifier.logits(x, direct=direct)
        out[direct] = (time.perf_counter() - start) / repeats * 1000
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-uri", action="append", required=True)
    parser.add_argument("--data", default=os.environ.get("MEDROBUST_DATA", "../shared/data/ham10000"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--images", type=int, default=1, help="images per request")
    args = parser.parse_args()
    table = pd.read_csv(Path(args.data) / "HAM10000_metadata.csv").sort_values("image_id")
    files = [Path(args.data) / "images" / f"{i}.jpg" for i in table.image_id[:64 * args.images]]
    bodies = [request_body(files[k:k + args.images]) for k in range(0, len(files), args.images)]
    env = dict(os.environ, MEDROBUST_IMAGE_ROOT=str(Path(args.data).resolve()))
    print(f"{args.clients} clients for {args.seconds:g} s each model, {args.images} image(s) of "
          f"{files[0].stat().st_size // 1024} KiB a request (base64 JPEG), this machine's {os.cpu_count()} cores\n")
    print("| model | requests | failed | requests/s | images/s | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for uri in args.model_uri:
            with model_server(uri, env, Path(tmp) / "serve.log") as url:
                for body in bodies[:2]:  # warm-up: the first calls trace the network
                    post(url, body)
                latencies, failures, wall = load(url, bodies, args.clients, args.seconds)
            n = len(latencies)
            p50, p95 = (np.percentile(latencies, [50, 95]) * 1000) if n else (float("nan"),) * 2
            print(f"| {uri} | {n + len(failures)} | {len(failures)} | {n / wall:.1f} | {n * args.images / wall:.1f} | "
                  f"{p50:.0f} | {p95:.0f} |")
            if failures:
                print(f"  failures: {failures[:5]}")
    print("\n| model | one image through model.predict, ms | called directly, ms | ratio |\n|---|---|---|---|")
    for uri in args.model_uri:
        ms = in_process(uri, files)
        print(f"| {uri} | {ms[False]:.1f} | {ms[True]:.1f} | {ms[False] / ms[True]:.1f}x |")


if __name__ == "__main__":
    main()
