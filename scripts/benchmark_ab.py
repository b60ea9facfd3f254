"""Alternated A/B of whole `python -m ghostnet_jax.benchmark` processes, one process per
setup per round (A B C A B C ...), so that a drifting machine hits every setup alike.

    python scripts/benchmark_ab.py --rounds 3 --out results/allocator_ab.csv \
        --setup 'glibc: GHOSTNET_JAX_ALLOCATOR=off' \
        --setup 'mimalloc (wheel): GHOSTNET_JAX_ALLOCATOR=mimalloc' \
        -- --model ghostnet_cifar_050 --batch-size 128 --steps 20 --epoch-steps 60

Each --setup is `NAME: VAR=VALUE VAR=VALUE ...` (environment added to this one's); the
arguments after `--` go to the benchmark. Appends one CSV row per process (the benchmark's
own figures plus the process's user/system CPU seconds and wall time) and prints the
medians per setup. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIELDS = (
    'model',
    'setup',
    'round',
    'step_img_s',
    'epoch_img_s',
    'eval_img_s',
    'compile_s',
    'user_s',
    'sys_s',
    'wall_s',
    'cpu',
    'date',
    'command',
)


def parse_setup(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(':')
    env = dict(a.split('=', 1) for a in assignments.split())
    return name.strip(), env


def run_once(args: list[str], env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'bench.json'
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, '-m', 'ghostnet_jax.benchmark', *args, '--json', str(out)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        wall = time.time() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f'benchmark failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
        d = json.loads(out.read_text())
    return {
        'step_img_s': d['train_images_per_sec'],
        'epoch_img_s': d.get('epoch_images_per_sec'),
        'eval_img_s': d.get('eval_images_per_sec'),
        'compile_s': d['compile_s'],
        'user_s': round(after.ru_utime - before.ru_utime, 1),
        'sys_s': round(after.ru_stime - before.ru_stime, 1),
        'wall_s': round(wall, 1),
        'model': d['model'],
        'cpu': d['cpu']['model'] + ' ' + ' '.join(d['cpu']['flags']),
    }


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index('--') if '--' in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--setup', action='append', required=True)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--out', required=True, help='CSV to append to')
    args = parser.parse_args(argv[:split])
    bench_args = argv[split + 1 :]
    setups = [parse_setup(s) for s in args.setup]
    out = Path(args.out)
    new = not out.exists()
    rows: dict[str, list[dict]] = {name: [] for name, _ in setups}
    with out.open('a', newline='') as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for r in range(1, args.rounds + 1):
            for name, env in setups:
                row = run_once(bench_args, env)
                row.update(
                    setup=name,
                    round=r,
                    date=time.strftime('%Y-%m-%d'),
                    command='python -m ghostnet_jax.benchmark ' + ' '.join(bench_args),
                )
                writer.writerow(row)
                f.flush()
                rows[name].append(row)
                print(
                    f'round {r} {name}: step {row["step_img_s"]} epoch {row["epoch_img_s"]} '
                    f'eval {row["eval_img_s"]} img/s, sys {row["sys_s"]} s',
                    flush=True,
                )
    for name, rs in rows.items():
        med = lambda k: statistics.median(float(x[k]) for x in rs if x[k] is not None)
        print(
            f'{name}: median step {med("step_img_s"):.1f} epoch {med("epoch_img_s"):.1f} '
            f'eval {med("eval_img_s"):.1f} img/s, sys {med("sys_s"):.1f} s'
        )


if __name__ == '__main__':
    main()
