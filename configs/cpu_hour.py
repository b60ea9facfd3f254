"""The default recipe fitted to one hour on a 2-core CPU: GhostNet-CIFAR 0.5x,
`time_budget_minutes=60` (the trainer measures the step and fits whole epochs).

Command (CIFAR-10's train split as a JPEG folder DATA/train/<class>/*.jpg; 45,000 train /
5,000 validation; with tfds:cifar10 prepared, drop the two data overrides):
    python -m ghostnet_jax.train --config configs/cpu_hour.py \\
        --config.data.source=folder:DATA --config.data.test_split='' --workdir runs/cpu_hour

Expected (measured 2026-11-29 on an idle 2-core AMD EPYC VM, AVX-512, float32, huge-page
malloc on; validation accuracy, as these machines have no test split):
    the plan: step 0.746 s, validation 6.8 s, compile 41 s, setup 90 s -> 12 epochs,
    predicted 56.0 min; the run: 57.3 min wall for the whole command, **84.58%** validation
    (by epoch: 53.9, 66.1, 67.3, 68.6, 69.1, 76.5, 80.1, 81.2, 82.4, 84.2, 84.3, 84.6).
A machine with another step time gets another number of epochs, and so another accuracy.

Why 0.5x: its train step is ~1.6-2x faster than 1.0x's on 2 cores (97.8 vs ~51-53 img/s
without huge pages, `python -m ghostnet_jax.benchmark`), and at these lengths more epochs
beat a wider net. Not yet compared at equal time (the issue's width/epochs lever is open).

Record of the variants (each a full run of this command on the same kind of machine):
1. 10 fixed epochs, dropout 0.1, no test-time flip (commit cb50bf7): 82.96% validation,
   but 81 min on a machine shared with test suites (~62 min estimated idle); retrained on
   another 2-core machine it took 74 min (83.26% val, 82.60% on the CIFAR-10 test split).
   Too long for "one hour", hence the budget.
2. time_budget_minutes=60, dropout 0.0, eval_flip=True, glibc's default malloc: the plan
   measured a 1.182 s step -> 7 epochs, predicted 51.9 min; the run took 56.1 min (its
   steps ran 7-10% slower than measured) and reached 81.54% (by epoch: 53.9, 65.8, 69.8,
   74.1, 79.2, 80.8, 81.5).
3. The same config with the huge-page malloc (every CLI now restarts with it): 12 epochs,
   84.58% in 57.3 min (above). The 87% goal of the accuracy issue is not reached.
Dropout 0.0 and eval_flip=True were changed together in variant 2 without a separate
ablation; both are the usual choice for short, underfitting schedules.
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
    config.log_every_steps = 50
    config.eval_flip = True
    return config
