# ruff: noqa: E402
"""Cost of the output classifier per image: milliseconds and memory (issue 19).

Run with `.venv/bin/python bench/safety.py [--runs N]`. A measurement, not a test. In one
process it loads NudeNet's 320n detector as `stationthis safety-worker` does (one intra-op
thread, CPU provider), then classifies stand-in images of the sizes the service makes — the
whole `classify` call, decode and re-encode included — and prints a table: load time, the
process's RSS before and after loading, and per size the median and p90 of N runs and the RSS
growth over them. The machine is shared and noisy: read the medians, and the ratios between
rows of one run, not one number alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import io
import statistics
import time

import psutil

from standins.comfyui import render

SIZES = [(512, 512), (1024, 1024), (1344, 768), (2048, 2048)]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def png(width: int, height: int, seed: int) -> bytes:
    img = render.generate({"positive": "bench", "seed": seed}, width, height)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="images per size")
    args = parser.parse_args()

    before = rss_mb()
    started = time.perf_counter()
    from media.classifier import NudeNetClassifier

    classifier = NudeNetClassifier()
    load_s = time.perf_counter() - started
    loaded = rss_mb()
    classifier.classify(png(64, 64, 0))  # the first run allocates onnxruntime's arenas
    warm = rss_mb()

    print(f"classifier: {classifier.name}, CPU, 1 intra-op thread")
    print(f"load: {load_s * 1000:.0f} ms; RSS {before:.0f} MB -> {loaded:.0f} MB loaded")
    print(f"-> {warm:.0f} MB after the first image")
    print()
    print("| image | PNG kB | median ms | p90 ms | RSS after, MB |")
    print("|---|---|---|---|---|")
    for width, height in SIZES:
        datas = [png(width, height, seed) for seed in range(args.runs)]
        times = []
        for data in datas:
            t = time.perf_counter()
            classifier.classify(data)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
        kb = statistics.median(len(d) for d in datas) / 1024
        print(
            f"| {width}×{height} | {kb:.0f} | {statistics.median(times):.0f} | {p90:.0f} "
            f"| {rss_mb():.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
