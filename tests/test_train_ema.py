"""EMA, label smoothing and bfloat16 through the trainer (job_ema below), on
GhostNetV2-tiny (DFC attention in bfloat16).

The evaluated EMA weights must be paired with EMA BatchNorm statistics: the validation
accuracy the trainer logged is recomputed here by hand from the checkpoint's
ema_params + ema_batch_stats (and differs from what the live statistics would give)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import train_harness as h

from ghostnet_jax.data import load_split
from ghostnet_jax.models import create_model


@h.job('ema')
def job_ema(t: h.Trainer, root: Path) -> h.Run:
    """EMA (with BatchNorm statistics), label smoothing and bfloat16 compute together."""
    return t.run(
        root / 'run',
        '--config.ema_decay=0.9',
        '--config.label_smoothing=0.1',
        '--config.dtype=bfloat16',
        f'--config.max_steps={h.PARALLEL_STEPS}',
        f'--config.model.name={h.EMA_MODEL}',
    )


def _unflatten(arrays: dict, prefix: str) -> dict:
    tree: dict = {}
    for key, value in arrays.items():
        if not key.startswith(prefix):
            continue
        parts = [p.strip("'[]") for p in key[len(prefix) :].split('][')]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def test_ema_with_batchnorm_statistics_label_smoothing_bfloat16(trainer):
    run = trainer.result('ema')
    assert run.rc == 0, run.tail()
    results = json.loads((run.workdir / 'results.json').read_text())
    assert np.isfinite(results['val']['loss'])
    step = h.PARALLEL_STEPS
    arrays = h.state_arrays(run.workdir, step)
    assert any(k.startswith("['ema_batch_stats']") for k in arrays), sorted(arrays)[:5]
    assert arrays["['params']['classifier']['kernel']"].dtype == np.float32  # bf16 compute only
    host = h.host_state(run.workdir, step)
    spec = host['model_spec']
    val = load_split(f'folder:{trainer.data}', 'train[80%:]', cache_dir=trainer.data_cache)
    images, labels = val.images, val.labels
    x = (images.astype(np.float32) - np.asarray(spec['mean'], np.float32)) / np.asarray(
        spec['std'], np.float32
    )
    assert spec['model_name'] == h.EMA_MODEL
    model = create_model(h.EMA_MODEL, num_classes=3, dtype=jnp.bfloat16, conv_impl='native')

    apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False))

    def accuracy(params, stats):
        logits = apply({'params': params, 'batch_stats': stats}, jnp.asarray(x))
        return float(np.mean(np.argmax(np.asarray(logits, np.float32), -1) == labels))

    ema_params = _unflatten(arrays, "['ema_params']")
    logged = h.val_epochs(run.workdir)[step // h.STEPS_PER_EPOCH]['accuracy']
    assert accuracy(ema_params, _unflatten(arrays, "['ema_batch_stats']")) == logged
    live = jax.tree.map(np.asarray, _unflatten(arrays, "['batch_stats']"))
    ema = _unflatten(arrays, "['ema_batch_stats']")
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(live), jax.tree.leaves(ema)))
