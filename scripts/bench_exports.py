"""File size, single-image CPU latency and agreement with predict of each export format.

    python scripts/bench_exports.py --workdir DIR [--formats stablehlo onnx tflite]
        [--runs 50] [--out-dir /tmp/exports]

Exports the model at DIR (a run or a ghostnet_jax.convert output) in every format with its
default batch (and TFLite also with a dynamic one), loads each in its own runtime (with the
runtimes' default thread settings), and
reports the median of --runs timed calls on one image after 3 warm-up calls, next to
`TrainedModel.predict` (JAX, the same image). Formats whose extra is missing are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ghostnet_jax.serving import exporters, load


def median_ms(fn, image: np.ndarray, runs: int) -> float:
    for _ in range(3):
        fn(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--formats', nargs='+', default=list(exporters.FORMATS))
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--out-dir', default='/tmp/ghostnet_jax_exports')
    args = parser.parse_args()
    model = load(args.workdir)
    image = exporters.sample_images(1, model.image_shape, seed=1)
    check = exporters.sample_images(7, model.image_shape, seed=2)
    rows = [
        {
            'format': 'predict (JAX, jit)',
            'size_mb': None,
            'latency_ms': median_ms(model.predict, image, args.runs),
            'max_abs_diff': 0.0,
        }
    ]
    variants = [(fmt, exporters.DEFAULT_BATCH[fmt]) for fmt in args.formats]
    if 'tflite' in args.formats:
        variants.append(('tflite', None))
    for fmt, batch in variants:
        out = Path(args.out_dir) / f'model_{batch or "dynamic"}{exporters.SUFFIXES[fmt]}'
        try:
            start = time.perf_counter()
            exporters.export_model(model, fmt, out, batch)
            seconds = time.perf_counter() - start
            run = exporters.RUNNERS[fmt](out)
        except exporters.MissingExtraError as e:
            print(f'skipping {fmt}: {e}')
            continue
        rows.append(
            {
                'format': f'{fmt} (batch {batch or "dynamic"})',
                'size_mb': out.stat().st_size / 1e6,
                'export_s': seconds,
                'latency_ms': median_ms(run, image, args.runs),
                'max_abs_diff': exporters.compare_with_predict(model, fmt, out, check),
            }
        )
    print(f'{model.spec.model_name}, input {model.image_shape}, {args.runs} runs, batch 1')
    for r in rows:
        size = f'{r["size_mb"]:.2f} MB' if r['size_mb'] is not None else '-'
        print(
            f'{r["format"]:>26}  {size:>9}  {r["latency_ms"]:8.2f} ms  '
            f'max|diff| {r["max_abs_diff"]:.2g}'
        )
    print(json.dumps(rows))


if __name__ == '__main__':
    main()
