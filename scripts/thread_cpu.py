"""Where a training run's CPU goes, thread by thread (Linux): runs a command, samples the
CPU time of every thread of its process tree from /proc, and prints the CPU-seconds per
(process, thread name) for the whole run and for its second epoch (between the first two
`epoch k/N:` summary lines the trainer prints).

    python scripts/thread_cpu.py --log RUN.log -- python -m ghostnet_jax.train --config ...

It answered "where do the streamed epoch's extra seconds go" (docs/performance.md): the
XLA threads (`tf_XLAEigen`) train; the Python threads of the training process and its data
workers decode, batch and place batches. Threads or processes that end between two samples
still count up to their last sample (a worker process ends with each epoch).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time

EPOCH_LINE = re.compile(r'(?m)^epoch \d+/\d+:')
Sample = tuple[float, int, dict[str, float]]  # (time, epochs finished, thread -> CPU-s)


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for tid in os.listdir(f'/proc/{pid}/task'):
                with open(f'/proc/{pid}/task/{tid}/children') as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:  # the process has just ended
            pass
    return pids


def thread_times(root: int) -> dict[str, float]:
    """'main|child:thread name:tid' -> its user + system CPU seconds so far."""
    tick = os.sysconf('SC_CLK_TCK')
    out = {}
    for pid in process_tree(root):
        try:
            tids = os.listdir(f'/proc/{pid}/task')
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f'/proc/{pid}/task/{tid}/stat') as f:
                    stat = f.read()
            except OSError:
                continue
            name = re.sub(r'(?<=[-_])\d+$', '#', stat[stat.index('(') + 1 : stat.rindex(')')])
            fields = stat[stat.rindex(')') + 2 :].split()
            role = 'main' if pid == root else 'child'
            out[f'{role}:{name}:{tid}'] = (int(fields[11]) + int(fields[12])) / tick
    return out


def window(samples: list[Sample], first: int, last: int) -> collections.Counter:
    """CPU-seconds per (role, thread name) from samples[first] to samples[last]."""
    start, seen = samples[first][2], {}
    for _, _, times in samples[first : last + 1]:
        seen.update(times)
    total = collections.Counter()
    for key, cpu in seen.items():
        total[key.rsplit(':', 1)[0]] += cpu - start.get(key, 0.0)
    return total


def report(title: str, samples: list[Sample], first: int, last: int) -> None:
    wall = samples[last][0] - samples[first][0]
    cpu = window(samples, first, last)
    print(f'{title}: {wall:.0f} s wall, {sum(cpu.values()):.1f} CPU-s')
    for name, seconds in cpu.most_common():
        if seconds >= 0.05:
            print(f'  {name:32s} {seconds:8.1f}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--log', required=True, help="the command's stdout and stderr")
    parser.add_argument('--every', type=float, default=1.0, help='seconds between samples')
    parser.add_argument('command', nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not command:
        parser.error('give the command to run after --')
    samples: list[Sample] = []
    with open(args.log, 'w') as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            with open(args.log) as f:
                epochs = len(EPOCH_LINE.findall(f.read()))
            samples.append((time.time(), epochs, thread_times(proc.pid)))
            time.sleep(args.every)
    samples = [s for s in samples if s[2]]
    if len(samples) < 2:
        print('the command ended before two samples', file=sys.stderr)
        return proc.returncode or 1
    report('whole run', samples, 0, len(samples) - 1)
    ends = [next((i for i, s in enumerate(samples) if s[1] >= k), None) for k in (1, 2)]
    if None not in ends:
        report('epoch 2 (with its validation)', samples, *ends)
    return proc.returncode


if __name__ == '__main__':
    sys.exit(main())
