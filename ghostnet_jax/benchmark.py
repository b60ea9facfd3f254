"""Speed of a registered model on this machine, measured as the trainer runs it.

    python -m ghostnet_jax.benchmark --model ghostnet_cifar_100 --batch-size 128 \
        [--json out.json] [--profile DIR] [--compare-torch]

Prints (and with --json writes) the median steady-state train step in images/s (each step
waited for), evaluation images/s (the trainer's Evaluator), a real epoch's images/s
(device-resident data, augmentation, metrics fetched every log_every_steps), the time to
the first finished train step including init (`compile_s`; cold unless a persistent
compilation cache is configured, see the README), and the machine, versions and XLA flags.
--compilation-cache DIR turns on JAX's persistent compilation cache; run twice for the warm time.
--profile DIR adds a jax.profiler trace and a table of time by op category.
--compare-torch times PyTorch/timm eager on the identical network in the same process,
interleaved with the JAX steps (needs the `torch` extra).
"""
from __future__ import annotations

import argparse
import json
import sys

from ghostnet_jax.models import list_models


def _summary(d: dict) -> str:
    lines = [(f"{d['model']} batch {d['batch_size']} {d['dtype']} on {d['backend']} "
             f"({d['device_count']} device(s), {d['cpu']['model']}, {d['cpu']['logical_cores']} "
             f"cores, {' '.join(d['cpu']['flags'])})"),
             f"  train step : {d['train_images_per_sec']} img/s (median of {len(d['train_step_s'])})",
             f"  compile_s  : {d['compile_s']} s to the first finished step, init included"]
    if d.get('epoch_images_per_sec'):
        lines.append(f"  epoch      : {d['epoch_images_per_sec']} img/s "
                     f"({d['epoch_over_train']:.1%} of the step)")
    if d.get('batch_s'):
        lines.append(f"  pipeline   : {d['pipeline_over_step']:.2%} of a step's time per batch "
                     f"(augmented batch timed interleaved with the steps)")
    if d.get('eval_images_per_sec'):
        lines.append(f"  eval       : {d['eval_images_per_sec']} img/s "
                     f"({d['eval_over_train']}x the train step)")
    if d.get('torch'):
        t = d['torch']
        lines.append(f"  torch/timm : {t['images_per_sec']} img/s eager, {t['threads']} threads "
                     f"(jax/torch = {t['jax_over_torch']}x)")
    if d.get('profile'):
        from ghostnet_jax.benchmarking.profile import format_table
        lines.append(format_table(d['profile']))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m ghostnet_jax.benchmark', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='ghostnet_cifar_100', choices=list_models())
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=20, help='timed train steps')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--conv-impl', default='auto', choices=('auto', 'native', 'shifted'))
    parser.add_argument('--epoch-steps', type=int, default=50,
                        help='steps of the timed epoch (0: skip)')
    parser.add_argument('--log-every-steps', type=int, default=None,
                        help="metrics fetch cadence in the epoch (default: the default config's)")
    parser.add_argument('--eval-batch-size', type=int, default=500)
    parser.add_argument('--eval-batches', type=int, default=4, help='0: skip evaluation')
    parser.add_argument('--json', metavar='PATH', help='write the results as JSON')
    parser.add_argument('--profile', metavar='DIR', help='jax.profiler trace + op-category table')
    parser.add_argument('--compare-torch', action='store_true',
                        help='interleave PyTorch/timm eager steps of the identical network')
    parser.add_argument('--torch-threads', type=int, default=None)
    parser.add_argument('--compilation-cache', metavar='DIR',
                        help='persistent XLA compilation cache (every entry kept): a rerun '
                             'with the same DIR measures the warm time to the first step')
    args = parser.parse_args(argv)

    if args.compare_torch:
        from ghostnet_jax.benchmarking.torch_peer import TORCH_PEERS, torch_available
        if not torch_available():
            parser.exit(2, 'error: --compare-torch needs torch and timm: '
                           "pip install -e '.[torch]' (see the README).\n")
        if args.model not in TORCH_PEERS:
            parser.exit(2, f'error: no timm peer for {args.model}; one of {sorted(TORCH_PEERS)}.\n')

    if args.compilation_cache:
        import jax
        # Before anything compiles. Thresholds 0: GhostNet's many small jits (init, data,
        # eval) would otherwise be left out and recompiled on every run.
        jax.config.update('jax_compilation_cache_dir', args.compilation_cache)
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
        jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    from ghostnet_jax.benchmarking import run_benchmark
    result = run_benchmark(
        args.model, args.batch_size, args.image_size, args.steps, args.dtype, args.conv_impl,
        epoch_steps=args.epoch_steps, log_every_steps=args.log_every_steps,
        eval_batch_size=args.eval_batch_size, eval_batches=args.eval_batches,
        profile_dir=args.profile, compare_torch=args.compare_torch,
        torch_threads=args.torch_threads)
    d = result.as_dict()
    print(_summary(d))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(d, f, indent=2)
        print(f'wrote {args.json}', file=sys.stderr)


if __name__ == '__main__':
    from ghostnet_jax.cli_process import prepare_cli_process
    prepare_cli_process('ghostnet_jax.benchmark')
    main()
