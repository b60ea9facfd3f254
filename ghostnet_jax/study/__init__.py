"""The study's method as commands: sanity checks, LR range test, (vectorized) grid search,
run reports and gradient-health warnings, all on top of the trainer's configs and workdirs."""
