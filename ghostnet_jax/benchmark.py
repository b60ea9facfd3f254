"""Speed of a registered model on this machine, measured as the trainer runs it.

    python -m ghostnet_jax.benchmark --model ghostnet_cifar_100 --batch-size 128 \
        [--json out.json] [--profile DIR] [--compare-torch]

Prints (and with --json writes) the median steady-state train step in images/s (each step
waited for), evaluation images/s (the trainer's Evaluator), a real epoch's images/s
(the trainer's own epoch loop: device-resident data, augmentation, metrics fetched every
log_every_steps), the time to
the first finished train step including init (`compile_s`; cold unless a persistent
compilation cache is configured), and the machine, versions, allocator and XLA flags.
--compilation-cache DIR turns on JAX's persistent compilation cache; run twice for the warm time.
--profile DIR adds a jax.profiler trace and a table of time by op category.
--compare-torch times PyTorch/timm eager on the identical network in the same process,
interleaved with the JAX steps (needs the `torch` extra).
--inference instead times inference: batch-1 latency (median, p90) and batch-32
throughput of GhostNet v1/v2/v3 and MobileNetV3 in jitted JAX, the reloaded StableHLO,
ONNX Runtime (float, int8) and LiteRT (float, int8), runtimes alternated
(--inference-models, --runtimes, --latency-runs, --throughput-runs, --rounds, --threads,
--csv results/inference.csv).
--stream-workers 0,1,2 adds the streamed input pipeline's host throughput (images/s that
Grain decodes, crops and batches, per number of worker processes) at --stream-sizes
(default 32 and 224) on synthetic JPEGs or --stream-data folder:PATH; --stream-only
measures only that (no model).
"""

from __future__ import annotations

import json
import shlex
import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.benchmark'


def _summary(d: dict) -> str:
    from ghostnet_jax.benchmarking.stream import format_rows

    if 'model' not in d:  # --stream-only
        return format_rows(d['stream'])
    lines = [
        (
            f'{d["model"]} batch {d["batch_size"]} {d["dtype"]} on {d["backend"]} '
            f'({d["device_count"]} device(s), {d["cpu"]["model"]}, {d["cpu"]["logical_cores"]} '
            f'cores, {" ".join(d["cpu"]["flags"])})'
        ),
        f'  train step : {d["train_images_per_sec"]} img/s (median of {len(d["train_step_s"])})',
        f'  compile_s  : {d["compile_s"]} s to the first finished step, init included',
    ]
    if d.get('epoch_images_per_sec'):
        lines.append(
            f'  epoch      : {d["epoch_images_per_sec"]} img/s '
            f'({d["epoch_over_train"]:.1%} of the step)'
        )
    if d.get('batch_s'):
        lines.append(
            f"  pipeline   : {d['pipeline_over_step']:.2%} of a step's time per batch "
            f'(augmented batch timed interleaved with the steps)'
        )
    if d.get('eval_images_per_sec'):
        lines.append(
            f'  eval       : {d["eval_images_per_sec"]} img/s '
            f'({d["eval_over_train"]}x the train step)'
        )
    if d.get('torch'):
        t = d['torch']
        lines.append(
            f'  torch/timm : {t["images_per_sec"]} img/s eager, {t["threads"]} threads '
            f'(jax/torch = {t["jax_over_torch"]}x)'
        )
    if d.get('stream'):
        lines.append(format_rows(d['stream']))
    if d.get('profile'):
        from ghostnet_jax.benchmarking.profile import format_table

        lines.append(format_table(d['profile']))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    from ghostnet_jax.models import list_models

    parser = flags.command_parser(PROG, __doc__)
    flags.add(
        parser, '--model', default='ghostnet_cifar_100', choices=list_models(), metavar='MODEL'
    )
    flags.add(parser, '--batch-size', type=int, default=128)
    flags.add(parser, '--image-size', type=int, default=32)
    flags.add(parser, '--steps', type=int, default=20, help='timed train steps')
    flags.add(parser, '--dtype', default='float32', choices=('float32', 'bfloat16'))
    flags.add(parser, '--conv-impl', default='auto', choices=('auto', 'native', 'shifted'))
    flags.add(
        parser, '--epoch-steps', type=int, default=50, help='steps of the timed epoch (0: skip)'
    )
    flags.add(
        parser,
        '--log-every-steps',
        type=int,
        default=None,
        help="metrics fetch cadence in the epoch (default: the default config's)",
    )
    flags.add(parser, '--eval-batch-size', type=int, default=500)
    flags.add(parser, '--eval-batches', type=int, default=4, help='0: skip evaluation')
    flags.add(parser, '--json', metavar='PATH', help='write the results as JSON')
    flags.add(parser, '--profile', metavar='DIR', help='jax.profiler trace + op-category table')
    flags.add(
        parser,
        '--compare-torch',
        action='store_true',
        help='interleave PyTorch/timm eager steps of the identical network',
    )
    flags.add(parser, '--torch-threads', type=int, default=None)
    flags.add(
        parser,
        '--stream-workers',
        default='',
        metavar='LIST',
        help='worker process counts for the stream throughput, e.g. 0,1,2 (default: skip)',
    )
    flags.add(
        parser,
        '--stream-sizes',
        default='32,224',
        metavar='LIST',
        help='image sides of the stream throughput: <64 as stored, else random crops',
    )
    flags.add(
        parser, '--stream-images', type=int, default=512, help='synthetic JPEGs written per size'
    )
    flags.add(parser, '--stream-batch-size', type=int, default=64)
    flags.add(parser, '--stream-threads', type=int, default=2, help='threads per worker')
    flags.add(
        parser,
        '--stream-data',
        metavar='folder:PATH',
        help="time this folder's train split instead of synthetic JPEGs",
    )
    flags.add(
        parser,
        '--stream-only',
        action='store_true',
        help='only the stream throughput (no model, no compile)',
    )
    flags.add(
        parser,
        '--inference',
        action='store_true',
        help='inference latency (batch 1) and throughput (batch 32) in every export runtime '
        'instead of the training benchmark',
    )
    flags.add(
        parser,
        '--inference-models',
        default='',
        metavar='NAME@SIZE,...',
        help='e.g. ghostnet_100@224,ghostnet_cifar_100@32 (default: GhostNet v1/v2/v3 0.5x/1.0x '
        'and MobileNetV3-Large/-Small 1.0 at 224 and their CIFAR variants at 32)',
    )
    flags.add(
        parser,
        '--runtimes',
        default='jax,stablehlo,onnx,onnx-int8,tflite,tflite-int8',
        metavar='LIST',
        help='inference runtimes to time (those whose extra is missing are skipped)',
    )
    flags.add(parser, '--latency-runs', type=int, default=100, help='timed batch-1 calls')
    flags.add(parser, '--throughput-runs', type=int, default=10, help='timed batch-32 calls')
    flags.add(parser, '--rounds', type=int, default=5, help='alternation rounds over runtimes')
    flags.add(
        parser,
        '--threads',
        type=int,
        default=None,
        help='ONNX Runtime and LiteRT threads (default: the CPUs this process may use)',
    )
    flags.add(parser, '--csv', metavar='PATH', help='--inference: append the rows to this CSV')
    flags.add(
        parser,
        '--compilation-cache',
        metavar='DIR',
        help='persistent XLA compilation cache (every entry kept): a rerun with the '
        'same DIR measures the warm time to the first step',
    )
    args, _ = flags.parse(parser, argv)

    def body() -> int:
        if args.inference:
            return _inference(args, argv)
        if args.compare_torch:
            from ghostnet_jax.benchmarking.torch_peer import TORCH_PEERS, require_torch

            require_torch()
            if args.model not in TORCH_PEERS:
                raise errors.UsageError(
                    f'no timm peer for {args.model}; one of {sorted(TORCH_PEERS)}.'
                )
        if args.compilation_cache:
            import jax

            # Before anything compiles. Thresholds 0: GhostNet's many small jits (init,
            # data, eval) would otherwise be left out and recompiled on every run.
            jax.config.update('jax_compilation_cache_dir', args.compilation_cache)
            jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
            jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
        stream_rows = _stream(args)
        if args.stream_only:
            return _report({'stream': stream_rows}, args.json)
        from ghostnet_jax.benchmarking import run_benchmark

        result = run_benchmark(
            args.model,
            args.batch_size,
            args.image_size,
            args.steps,
            args.dtype,
            args.conv_impl,
            epoch_steps=args.epoch_steps,
            log_every_steps=args.log_every_steps,
            eval_batch_size=args.eval_batch_size,
            eval_batches=args.eval_batches,
            profile_dir=args.profile,
            compare_torch=args.compare_torch,
            torch_threads=args.torch_threads,
        )
        d = result.as_dict()
        if stream_rows:
            d['stream'] = stream_rows
        return _report(d, args.json)

    return errors.run_command(PROG, body, argv)


def _inference(args, argv: list[str] | None) -> int:
    """--inference: every model in every runtime, printed and (--csv) appended."""
    from ghostnet_jax.benchmarking import inference
    from ghostnet_jax.models import list_models

    models = list(inference.DEFAULT_MODELS)
    if args.inference_models:
        models = []
        for item in args.inference_models.split(','):
            name, _, size = item.partition('@')
            if name not in list_models() or not size.isdigit():
                raise errors.UsageError(
                    f'--inference-models takes NAME@SIZE items with registered names, e.g. '
                    f'ghostnet_100@224; got {item!r}.'
                )
            models.append((name, int(size)))
    runtimes = args.runtimes.split(',')
    unknown = sorted(set(runtimes) - set(inference.RUNTIMES))
    if unknown:
        raise errors.UsageError(f'unknown --runtimes {unknown}; choose from {inference.RUNTIMES}.')
    if min(args.latency_runs, args.throughput_runs, args.rounds) < 1:
        raise errors.UsageError('--latency-runs, --throughput-runs and --rounds must be >= 1.')
    from ghostnet_jax.training.environment import cpu_info

    cpu = cpu_info()
    cpu_text = f'{cpu["model"]} ({cpu["logical_cores"]} cores, {" ".join(cpu["flags"])})'
    threads = args.threads or inference.default_threads()
    command = shlex.join(['python', '-m', 'ghostnet_jax.benchmark', *(argv or sys.argv[1:])])
    print(f'{cpu_text}; ONNX Runtime and LiteRT threads: {threads}', flush=True)
    rows = []
    for name, size in models:
        model_rows = inference.benchmark_model(
            name,
            size,
            runtimes,
            threads,
            args.latency_runs,
            args.throughput_runs,
            args.rounds,
            cpu_text,
            command,
        )
        print(inference.format_rows(model_rows), flush=True)
        rows += model_rows
        if args.csv:
            inference.append_rows(args.csv, model_rows)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=2)
    return errors.OK


def _stream(args) -> list[dict]:
    """The stream throughput rows the flags ask for (none without --stream-workers)."""
    if not args.stream_workers:
        if args.stream_only:
            raise errors.UsageError('--stream-only needs --stream-workers, e.g. 0,1,2.')
        return []
    try:
        workers = [int(w) for w in args.stream_workers.split(',')]
        sizes = [int(s) for s in args.stream_sizes.split(',')]
    except ValueError as e:
        raise errors.UsageError(
            f'--stream-workers/--stream-sizes take comma-separated '
            f'integers, e.g. 0,1,2 and 32,224 ({e}).'
        ) from e
    from ghostnet_jax.benchmarking.stream import stream_throughput

    return stream_throughput(
        workers,
        sizes,
        args.stream_images,
        args.stream_batch_size,
        args.stream_threads,
        args.stream_data,
    )


def _report(d: dict, json_path: str | None) -> int:
    print(_summary(d))
    if json_path:
        with open(json_path, 'w', encoding='utf-8') as f:
            json.dump(d, f, indent=2)
        print(f'wrote {json_path}', file=sys.stderr)
    return errors.OK


if __name__ == '__main__':
    from ghostnet_jax.cli.process import prepare_process, setup_logging

    prepare_process()
    setup_logging()
    sys.exit(main())
