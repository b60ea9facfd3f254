"""The default recipe fitted to one hour on a 2-core CPU: GhostNet-CIFAR 0.5x, the first
half of the epochs at 24x24 (`data.low_res`), a linear learning-rate decay,
`time_budget_minutes=60` (the trainer measures both steps and fits whole epochs).

Command (CIFAR-10's train split as a JPEG folder DATA/train/<class>/*.jpg; 45,000 train /
5,000 validation; with tfds:cifar10 prepared, drop the two data overrides):
    python -m ghostnet_jax.train --config configs/cpu_hour.py \\
        --config.data.source=folder:DATA --config.data.test_split='' --workdir runs/cpu_hour

Expected (measured 2026-11-30 on an idle 2-core AMD EPYC VM, AVX-512, float32, huge-page
malloc and the large-block malloc cache, XLA fast math; validation accuracy, as these
machines have no test split):
    the plan: step 0.529 s (0.237 s at 24x24), validation 6.7 s, compile 39 s, setup 136 s
    -> 23 epochs; the refit after epoch 1: the loop's 24x24 step 0.254 s (the full-size
    step scaled alike, plus 5%: 0.595 s) -> 21 epochs, 11 of them at 24x24; the refit after
    epoch 12, the first at full size: the loop's step 0.430 s -> 24 epochs, the decay left
    from step 4212 spread over them, predicted 55.8 min; the run: **87.12%** validation
    (the best epoch, 24) in **55.8 min** (the trainer's clock; 56.3 by `/usr/bin/time`).
    By epoch: 41.1, 57.8, 57.0, 62.9, 65.0, 69.5, 70.5, 70.5, 73.4, 72.3, 73.2 (24x24,
    validated at 32x32) | 79.9, 80.9, 80.3, 82.7, 82.7, 83.1, 84.2, 83.4, 85.1, 85.5, 86.0,
    86.6, 87.1. This is variant 14 below: the block cache (README, Performance) made the
    loop's full-size step 0.430 s against variants 12-13's 0.744-0.754 s, so 24 epochs fit
    where 16 did. A second seed (variant 15): 25 epochs, **88.00%** in 57.7 min.
A machine with another step time gets another number of epochs, and so another accuracy.

Why 0.5x: its train step is ~2.3x faster than 1.0x's on 2 cores (238.0 vs 104.7 img/s,
`python -m ghostnet_jax.benchmark`, 2026-11-29), and at these lengths more epochs beat a
wider net (variants 3 and 4: 12 -> 19 epochs gave +2.2 points; 15 epochs in variant 5 gave +1.6). Not yet compared at equal time (the issue's width/epochs lever is open).

Record of the variants (each a full run of this command on the same kind of machine):
1. 10 fixed epochs, dropout 0.1, no test-time flip (commit cb50bf7): 82.96% validation,
   but 81 min on a machine shared with test suites (~62 min estimated idle); retrained on
   another 2-core machine it took 74 min (83.26% val, 82.60% on the CIFAR-10 test split).
   Too long for "one hour", hence the budget.
2. time_budget_minutes=60, dropout 0.0, eval_flip=True, glibc's default malloc: the plan
   measured a 1.182 s step -> 7 epochs, predicted 51.9 min; the run took 56.1 min (its
   steps ran 7-10% slower than measured) and reached 81.54% (by epoch: 53.9, 65.8, 69.8,
   74.1, 79.2, 80.8, 81.5).
3. The same config with the huge-page malloc (every CLI now restarts with it): the plan
   measured 0.746 s -> 12 epochs, predicted 56.0 min; the run took 57.3 min, 84.58%
   (by epoch: 53.9, 66.1, 67.3, 68.6, 69.1, 76.5, 80.1, 81.2, 82.4, 84.2, 84.3, 84.6).
4. The same config after XLA fast math and the hand-written depthwise gradient (README,
   Performance): the plan measured 0.484 s -> 19 epochs, predicted 58.1 min; the run
   reached 86.76% but took 71.7 min, because its loop's steps took ~0.60 s from the first
   epoch on (by epoch: 50.6, 64.4, 72.1, 72.7, 73.7, 75.6, 79.2, 76.8, 77.1, 80.9, 80.4,
   81.6, 83.6, 83.4, 85.9, 86.3, 86.5, 86.6, 86.8). The speed-up is worth +2.2 points, but
   this is not a one-hour result; it is why the budget now refits after epoch 1.
5. The same config after the time budget learned to refit after epoch 1 (and CPU steps
   wait for their inputs): 16 -> 15 epochs, 86.14% in 55.6 min (above). The record within
   the hour; the 87% goal is not reached. Its epochs took 206-218 s (226 s once), within
   3% of the refit's 212 s.
6. Variant 5 with batch 64, learning rate 0.05 (the same ratio) and ema_decay=0.999
   (`--config.batch_size=64 --config.optimizer.learning_rate=0.05 --config.ema_decay=0.999`;
   tried because the benchmark measured batch 64's 0.5x step at 252.5 img/s median / 249.0
   mean against batch 128's 221.2 / 197.8, one process each): the plan 0.308 s -> 14
   epochs, the refit 0.298 s -> 15 epochs, predicted 56.7 min; **85.46%** in 55.1 min. Ahead
   of variant 5 until epoch 11, behind from epoch 12 (by epoch: 60.9, 71.3, 75.5, 78.3,
   79.6, 80.7, 81.5, 82.4, 82.9, 83.6, 84.2, 84.7, 85.3, 85.4, 85.5). The loop ran at 215
   img/s, batch 128's 219, so the benchmark's batch-64 gain did not reach the trainer. The
   same final checkpoint's raw (not averaged) weights score 85.38%: EMA is worth +0.08
   points at the end of this schedule. Not adopted.
7. Variant 5 with learning rate 0.2 (`--config.optimizer.learning_rate=0.2`): the plan
   0.569 s -> 16 epochs, the refit 0.607 s -> 15 epochs, predicted 57.3 min;
   **85.70%** in 58.0 min (by epoch: 48.2, 60.4, 67.4, 68.9, 72.3, 72.0, 77.2, 76.7, 78.1,
   80.5, 82.4, 83.3, 84.5, 85.6, 85.7), behind variant 5 in every epoch. Its epochs took
   209-250 s, against the refit's ~220 s. Not adopted.
8. Variant 5 with the first half of the epochs at 24x24 (`--config.data.low_res.size=24`,
   training/low_res.py; before the 5% extrapolation margin): the plan 0.509 s (0.270 s at
   24x24) -> 22 epochs, the refit 0.307 s at 24x24 (full size scaled: 0.580 s) -> 20
   epochs (10 small), predicted 57.7 min; **86.44%** in 59.9 min wall (the trainer's clock
   59.4), +0.30 over variant 5. By epoch (validation is at 32x32 throughout, so the small
   epochs score low): 28.9, 60.3, 54.4, 64.3, 66.4, 64.8, 69.6, 67.7, 71.9, 73.6 | 79.8,
   80.4, 81.7, 82.7, 83.4, 84.2, 85.4, 85.9, 86.1, 86.4. Small epochs took 113-121 s, full
   ones 217-221 s: the loop's full step (0.605 s) was 4.2% slower than the scaled estimate,
   hence LOW_RES_EXTRAPOLATION_MARGIN in training/time_budget.py. (About 10 s of unit
   tests ran beside it.)
9. Variant 8 with crop_padding=2 and the 5% margin (this config with
   `--config.optimizer.schedule=warmup_cosine`): the plan 0.501 s (0.267 s at 24x24) -> 23
   epochs; the refit: the loop's 24x24 step 0.325 s (full size scaled + 5%: 0.641 s) -> 18
   epochs, 9 of them at 24x24, predicted 56.0 min; **86.64%** (epoch 18) in 55.5 min wall
   (`/usr/bin/time` 68.6 min less a 13.0-min SIGSTOP pause while a test suite ran; the
   trainer's clock 55.1). By epoch: 41.1, 60.5, 59.5, 66.6, 64.3, 67.0, 70.5, 72.0, 74.3 |
   80.8, 81.7, 83.1, 84.2, 84.6, 85.9, 86.5, 86.6, 86.6. **The record within the hour**:
   +0.50 over variant 5, +0.20 over variant 8 with two fewer epochs (pad 2 and the epoch
   count are not separated). This process's loop ran slower (24x24 step 0.325 s against
   variant 8's 0.307 s), and the margin counts more for the full-size epochs, so it
   fitted 18 epochs, not 20.
10. Variant 9 with a smaller first size for more of the epochs
   (`--config.data.low_res.size=20 --config.data.low_res.epochs_fraction=0.6`, with
   `--config.optimizer.schedule=warmup_cosine` since variant 11): the plan
   0.548 s (0.245 s at 20x20) -> 23 epochs; the refit: the loop's 20x20 step 0.275 s (full
   size scaled + 5%: 0.647 s) -> 20 epochs, 12 of them at 20x20, predicted 56.3 min;
   **85.94%** (epoch 20), 0.70 below variant 9. By epoch: 41.9, 49.1, 49.4, 56.5, 60.9,
   60.1, 61.0, 59.7, 61.0, 65.9, 62.0, 65.2 (20x20, validated at 32x32: further below
   variant 9's 24x24 epochs) | 81.0, 81.2, 83.9, 84.5, 85.3, 85.3, 85.9, 85.9. Eight
   full-size epochs were too few to recover from twelve at 20x20. Its full-size epochs took
   240-270 s against the 235 s the refit assumed (the loop's full step ~0.70 s against the
   0.548 s calibrated: the extrapolation from a 20x20 step falls further short than from
   24x24, and 15.5 minutes of SIGSTOP pauses for tests fell inside the run), so it ended
   58.0 minutes into its 60 (the trainer's clock less the pauses). Not adopted.
11. Variant 9 with the learning rate decaying linearly instead of along a cosine
   (`optimizer.schedule='warmup_linear'`, this config; Li et al., "Budgeted Training",
   ICLR 2020; code at 41bfdfb): the plan 0.506 s (0.300 s at 24x24) -> 22 epochs; the
   refit: the loop's 24x24 step 0.335 s (full size scaled + 5%: 0.593 s) -> 19 epochs, 9
   small, predicted 57.8 min; **87.06%** (epoch 19) but in **61.9 min** (62.4 by
   `/usr/bin/time`): the full-size epochs took 221-255 s where the refit assumed ~215 s
   (its calibrated 24x24/32x32 step ratio, 0.59, was above variants 8 and 9's 0.53). By
   epoch: 41.1, 55.7, 60.3, 63.9, 65.0, 67.5, 70.0, 71.4, 73.1 | 80.4, 80.7, 81.9, 82.9,
   81.8, 83.7, 84.0, 85.6, 86.8, 87.1. Behind variant 9 at the same point of the
   schedule until the last two epochs (81.8 vs 84.2 at ~73%, 85.6 vs 86.5 at 89%), then
   86.8 and 87.1: the linear decay keeps the rate higher late and drops it to zero in the
   final epochs. +0.42 over variant 9, with one epoch more (19 against 18, the calibration
   noise above): the two are not separated, and the run overran the hour.
12. This config after the time budget learned to refit after the first full-size epoch
   (training/time_budget.py; code at 7ab1429), in a slower process on the same kind of
   machine: the plan 0.540 s (0.279 s at 24x24) -> 21 epochs; the refit after epoch 1:
   the loop's 24x24 step 0.348 s (full size scaled + 5%: 0.708 s) -> 17 epochs, 9 small;
   the refit after epoch 10: the loop's full step 0.754 s (+40% over its calibration) ->
   16 epochs, the decay left from step 3510 spread over them, predicted 56.4 min;
   **86.24%** (epoch 16) in **55.9 min** (the trainer's clock; 56.4 by `/usr/bin/time`).
   Without the third fit its 17 epochs would have ended ~61 minutes in. By epoch: 41.1,
   57.1, 62.2, 68.4, 67.1, 70.5, 64.3, 72.1, 71.7 | 81.2, 81.2, 82.4, 83.8, 83.9, 85.3,
   86.2. Full-size epochs took 244-275 s (variant 11: 221-255 s) and small ones 131-140 s
   (variant 11: 120-130 s): this process trained ~8-15% slower, so fewer epochs fit and
   the accuracy is lower; the budget held. About 16 s of unit tests ran during epoch 1.
13. Variant 12 with `--config.seed=1` (code at 69ffbe6), idle: the plan 0.635 s (0.330 s
   at 24x24) -> 18 epochs; the refit after epoch 1: 0.325 s at 24x24 (full size scaled +
   5%: 0.655 s) -> 18 epochs, 9 small; the refit after epoch 10: the loop's full step
   0.744 s -> 16 epochs, predicted 54.1 min; **85.80%** (epoch 16) in **50.6 min** (51.1
   by `/usr/bin/time`). By epoch: 47.6, 58.8, 63.1, 67.4, 66.5, 71.6, 71.8, 65.5, 69.9 |
   79.2, 79.6, 80.6, 82.8, 83.5, 85.1, 85.8. Its later full-size epochs ran faster than
   the one the third fit measured (225-234 s against ~268 s), so 9 minutes of the hour
   went unused: the step's mean varies by ±20% from epoch to epoch on this VM. With
   variant 12, the first two samples of this config: 86.24% and 85.80%.
14. Variant 12's config and code plus the large-block malloc cache
   (ghostnet_jax/malloc_block_cache.c, preloaded by the CLIs; commit a4a7f97), which keeps
   XLA:CPU's 1.7 GB per-step temporary block mapped instead of faulting it in afresh every
   step: small epochs took 91-102 s (variant 12: 131-140 s), full-size ones 152-167 s
   (244-275 s) plus 7 s of validation, so the budget fitted 24 epochs (11 small);
   **87.12%** in 55.8 min (above). The first run of this config to reach the issue's 87%
   within the hour. The process's system CPU time: 135 s in all (variant 12: 1,392 s).
15. Variant 14 with `--config.seed=1` (code at b018c5a), idle: the plan 0.427 s (0.230 s
   at 24x24) -> 27 epochs; the refit after epoch 1: 0.256 s at 24x24 (full size scaled +
   5%: 0.498 s) -> 23 epochs, 11 small; the refit after epoch 12: the loop's full step
   0.419 s -> 25 epochs, predicted 56.7 min; **88.00%** (epoch 25) in **57.7 min** (58.2 by
   `/usr/bin/time`). By epoch: 47.6, 56.3, 62.0, 63.1, 63.5, 71.1, 70.6, 69.1, 62.9, 70.7,
   72.9 | 79.8, 79.6, 78.0, 81.9, 80.8, 83.9, 83.6, 85.6, 84.2, 85.9, 86.2, 86.5, 87.5,
   88.0. With variant 14, two seeds of this config with the block cache: 87.12% and
   88.00% (mean 87.56%), both within the hour. Full-size epochs 154-160 s, except the
   two after the switch (195 s each: the full-size step's compile, then the recompile
   for the refitted length).
Tried and stopped: variant 5 with crop_padding=2 alone, stopped after 3 of 14 epochs to
free the machine for variant 8 (no figure).
Dropout 0.0 and eval_flip=True were changed together in variant 2 without a separate
ablation; both are the usual choice for short, underfitting schedules.
Translations at test time add nothing on top of the flip: variant 5's best checkpoint,
re-evaluated on validation with each image and its mirror also shifted by (+-1, +-1) or
(+-2, +-2) pixels (reflect padding) or at the four (+-2, +-2) corners, scored 85.88-86.18%
against the flip's 86.14% (a throwaway script around `evaluate.evaluate_checkpoint`).
"""
from ghostnet_jax.configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'ghostnet_cifar_050'
    config.model.dropout_rate = 0.0
    config.time_budget_minutes = 60.0   # num_epochs is fitted to the machine (README, Training)
    config.batch_size = 128
    config.label_smoothing = 0.1
    config.optimizer.learning_rate = 0.1
    config.optimizer.warmup_epochs = 1.0
    config.optimizer.schedule = 'warmup_linear'   # budget-aware decay (variant 11)
    config.log_every_steps = 50
    config.eval_flip = True
    config.data.low_res.size = 24          # the first half of the epochs at 24x24 (variant 8)
    config.data.augment.crop_padding = 2   # lighter translation for a short run (variant 9)
    return config
