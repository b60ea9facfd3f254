"""GhostNet v1 vs v2 vs v3 on CIFAR-10 at 0.5x width, each on configs/cpu_hour.py's recipe
and 60-minute budget (fitted to each network's own measured step), same seed and data:
only the network differs. ARG after the colon picks the version (default v1):
    v1  ghostnet_cifar_050     1.32M parameters, 12.2M MACs
    v2  ghostnetv2_cifar_050   + DFC attention: 1.59M parameters, 14.7M MACs
    v3  ghostnetv3_cifar_050   trained with 3 branches per conv (34.3M MACs a step);
                               predict/export fold it to 1.58M parameters, 14.7M MACs

Commands (CIFAR-10's train split as a folder, as for cpu_hour.py):
    python -m ghostnet_jax.train --config configs/ghostnet_versions.py:v1 \\
        --config.data.source=folder:DATA --config.data.test_split='' --workdir runs/versions_v1
    (the same with :v2 and runs/versions_v2, :v3 and runs/versions_v3)
Same epochs instead of the same time: add --config.time_budget_minutes=0
--config.num_epochs=N. Step time of each (same machine): python -m ghostnet_jax.benchmark
--model NAME --batch-size 128.
Expected at 2 fixed epochs (2-core CPU, 2026-12-07): v1 71.60%, v2 72.54%, v3 67.52%
validation (docs/experiments.md); at the 60-minute budget: not yet measured.
"""

from ghostnet_jax.configs import cpu_hour
from ghostnet_jax.training.config_checks import ConfigError

VERSIONS = {'v1': 'ghostnet_cifar_050', 'v2': 'ghostnetv2_cifar_050', 'v3': 'ghostnetv3_cifar_050'}


def get_config(version: str = 'v1'):
    if version not in VERSIONS:
        raise ConfigError(
            f'configs/ghostnet_versions.py:{version}: the version must be one of '
            f'{", ".join(VERSIONS)} (e.g. --config configs/ghostnet_versions.py:v2).'
        )
    config = cpu_hour.get_config()
    config.model.name = VERSIONS[version]
    return config
