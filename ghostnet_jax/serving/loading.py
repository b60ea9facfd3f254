"""`ghostnet_jax.load`: a trained model, ready to classify images, from a path.

    model = ghostnet_jax.load('runs/cifar10')            # best checkpoint of a workdir
    probs = model.predict(uint8_nhwc_batch)                # (N, num_classes), rows sum to 1
    probs = model.predict(model.load_images(['a.png']))    # files, resized as trained

The path may be a training workdir, its checkpoints/ directory, one step directory, or the
output of `python -m ghostnet_jax.convert` (converted timm/official ImageNet weights).
Everything needed (architecture, class names, normalization) is read from the checkpoint.
A GhostNetV3 is re-parameterized on loading (`model.model.reparameterized`), so `predict`
and every export run its folded form.

Batch sizes: `predict` pads each batch to the next power of two (1, 2, 4, ...,
`max_batch`) and splits larger ones into chunks of `max_batch`, so at most
log2(max_batch) + 1 programs are ever compiled, whatever batch sizes callers use.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from ghostnet_jax.models.reparameterize import reparameterize
from ghostnet_jax.serving.preprocessing import Preprocessing
from ghostnet_jax.training.checkpoints import STATE, Checkpointer, CheckpointError
from ghostnet_jax.training.model_spec import SPEC_KEY, ModelSpec, ModelSpecError
from ghostnet_jax.training.pretrained import INFO_FILE as CONVERT_INFO
from ghostnet_jax.training.steps import eval_logits

PREPROCESSING_KEY = 'preprocessing'
DEFAULT_MAX_BATCH = 64


@dataclasses.dataclass
class TrainedModel:
    """A network with its weights and everything needed to feed it images."""

    spec: ModelSpec
    preprocessing: Preprocessing
    model: nn.Module
    variables: dict[str, Any]  # {'params', 'batch_stats'}: what the trainer evaluates
    source: str  # the directory the weights were read from
    step: int | None = None  # training step of the checkpoint (None: converted)
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self):
        if self.max_batch < 1 or self.max_batch & (self.max_batch - 1):
            raise ValueError(f'max_batch must be a power of two, got {self.max_batch}')
        # Variables are an argument, not constants baked into the program: compiling is
        # faster, and the one copy on the device serves every bucket.
        self.variables = jax.device_put(self.variables)
        self._jitted = jax.jit(self._probabilities)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.preprocessing.image_shape

    # ------------------------------------------------------------------ the function
    def _probabilities(self, variables: dict, images: jax.Array) -> jax.Array:
        return probabilities(
            self.model, self.preprocessing, variables, images, flip=self.spec.eval_flip
        )

    def serving_function(self, model: nn.Module | None = None) -> Callable[[jax.Array], jax.Array]:
        """images (uint8 NHWC, pixel units) -> probabilities, weights baked in: the exact
        function `predict` computes, closed over the variables, for exporters. `model`
        (same variables, e.g. another conv_impl) replaces the module."""
        module, preprocessing, variables = model or self.model, self.preprocessing, self.variables
        flip = self.spec.eval_flip
        return lambda images: probabilities(module, preprocessing, variables, images, flip=flip)

    # --------------------------------------------------------------------- predict
    def predict(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Class probabilities, (N, num_classes) float32, for an NHWC batch of any size.

        uint8 images are pixels in [0, 255]; float images must be in [0, 1]. One (H, W, C)
        image gives (num_classes,). Images must already have the model's image_shape
        (`load_images`/`prepare` bring files and arrays there)."""
        x = np.asarray(images)
        single = x.ndim == 3
        if single:
            x = x[None]
        self._check(x)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self.num_classes), np.float32)
        out = []
        for start in range(0, n, self.max_batch):
            chunk = x[start : start + self.max_batch]
            bucket = bucket_size(len(chunk), self.max_batch)
            if bucket > len(chunk):  # pad with copies of the last image: always valid input
                pad = np.repeat(chunk[-1:], bucket - len(chunk), axis=0)
                chunk = np.concatenate([chunk, pad])
            probs = self._jitted(self.variables, chunk)
            out.append(np.asarray(probs)[: min(self.max_batch, n - start)])
        result = np.concatenate(out)
        return result[0] if single else result

    def _check(self, x: np.ndarray) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f'predict takes (N, {", ".join(map(str, self.image_shape))}) NHWC images, got '
                f'shape {x.shape}; use model.load_images(paths) or model.prepare(image) to '
                'resize as trained.'
            )
        if np.issubdtype(x.dtype, np.floating):
            if x.size and (np.nanmin(x) < -1e-3 or np.nanmax(x) > 1 + 1e-3):
                raise ValueError(
                    f'float images must be in [0, 1], got values in [{np.nanmin(x):.3g}, '
                    f'{np.nanmax(x):.3g}]; pass uint8 for pixels in [0, 255].'
                )
        elif x.dtype != np.uint8:
            raise ValueError(f'images must be uint8 (0..255) or float in [0, 1], got {x.dtype}.')

    # ----------------------------------------------------------------- host helpers
    def prepare(self, image: Any) -> np.ndarray:
        """One PIL image or HWC array -> (H, W, C) uint8 input, resized as trained."""
        return self.preprocessing.prepare(image)

    def load_images(
        self, paths: Sequence[str | os.PathLike], num_threads: int | None = None
    ) -> np.ndarray:
        """Decodes files (in threads: PIL releases the GIL) into an (N, H, W, C) uint8 batch."""
        if not paths:
            return np.zeros((0, *self.image_shape), np.uint8)
        threads = num_threads or min(8, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return np.stack(list(pool.map(self.preprocessing.load_image, paths)))

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """Per row of `probs`, the k most likely (index, class name, probability)."""
        probs = np.atleast_2d(probs)
        k = min(k, self.num_classes)
        # stable sort on -p: ties keep class order, so the output is deterministic
        order = np.argsort(-probs, axis=-1, kind='stable')[:, :k]
        return [
            [(int(i), self.class_names[i], float(row[i])) for i in idx]
            for row, idx in zip(probs, order)
        ]


def probabilities(
    module: nn.Module,
    preprocessing: Preprocessing,
    variables: dict,
    images: jax.Array,
    flip: bool = False,
) -> jax.Array:
    """The one function predict and every export compute: normalize, classify, softmax;
    with `flip` (a run evaluated with eval_flip) the mean of the probabilities of each
    image and its mirror, as the trainer's evaluator computes them (`steps.eval_logits`)."""
    logits = eval_logits(variables, preprocessing.to_model_input(images), model=module, flip=flip)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def bucket_size(n: int, max_batch: int) -> int:
    """The compiled batch size that serves `n` images (n <= max_batch)."""
    return min(max_batch, 1 << max(0, (n - 1).bit_length()))


# ------------------------------------------------------------------------ loading


def load(
    path: str | os.PathLike,
    which: str | int = 'best',
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    conv_impl: str | None = None,
    fallback_spec: Callable[[], ModelSpec] | None = None,
) -> TrainedModel:
    """The trained model at `path`, ready for `predict`.

    `path`: a training workdir (uses its checkpoints/), a checkpoints/ directory, one
    step directory (then `which` is ignored), or a `ghostnet_jax.convert` output.
    `which`: 'best' (by the run's best metric), 'latest' or a step number; a run whose
    checkpoints carry no metric falls back from 'best' to 'latest'.
    `conv_impl` overrides the convolution formulation (same weights, same function).
    `fallback_spec` gives the spec of a checkpoint written before checkpoints stored one.

    Raises CheckpointError for a missing, damaged or unusable checkpoint.
    """
    # gs:// and other remote workdirs through epath, as the Checkpointer reads them.
    path = epath.Path(path) if '://' in str(path) else Path(path).absolute()
    if not path.exists():
        raise CheckpointError(f'{path} does not exist.')
    if (path / CONVERT_INFO).is_file():
        spec, prep, variables = _read_converted(path)
        step = None
    else:
        step_dir, step, host, workdir = _resolve_checkpoint(path, which)
        spec = _stored_spec(step_dir, host, workdir, fallback_spec)
        prep = Preprocessing.for_run(spec)
        variables = read_eval_variables(step_dir)
    overrides = {} if conv_impl is None else {'conv_impl': conv_impl}
    try:
        model = spec.build_model(jnp.float32, **overrides)
    except ValueError as e:
        raise CheckpointError(f'Cannot rebuild the model stored in {path}: {e}') from e
    _check_shapes(model, prep, variables, path)
    # A GhostNetV3 serves folded: one conv per branch group, the same function (to float
    # rounding) at a fraction of the MACs. Every other model comes back unchanged.
    model, variables = reparameterize(model, variables)
    return TrainedModel(
        spec=spec,
        preprocessing=prep,
        model=model,
        variables=variables,
        source=str(path),
        step=step,
        max_batch=max_batch,
    )


def _stored_spec(
    step_dir: Path, host: dict, workdir: Path | None, fallback: Callable[[], ModelSpec] | None
) -> ModelSpec:
    if SPEC_KEY not in host:
        if fallback is not None:
            return fallback()
        raise CheckpointError(
            f'{step_dir} has no stored model spec (it predates them): evaluate it with '
            'python -m ghostnet_jax.evaluate, which can rebuild the spec from the training '
            'data, or retrain.'
        )
    try:
        spec = ModelSpec.from_json(host[SPEC_KEY])
    except (ModelSpecError, TypeError, ValueError) as e:
        raise CheckpointError(f'{step_dir} holds an unusable model spec: {e}') from e
    if 'eval_flip' not in host[SPEC_KEY]:
        # Specs written before 2026-12 did not record it; the run's config.json did.
        spec = dataclasses.replace(spec, eval_flip=bool(_run_config(workdir).get('eval_flip')))
    return spec


def _resolve_checkpoint(path: Path, which: str | int) -> tuple[Path, int, dict, Path | None]:
    """(step directory, step, host JSON, the run's workdir or None) for a workdir,
    checkpoints dir or step dir."""
    if (path / STATE).is_dir():  # one step directory
        if not path.name.isdigit():
            raise CheckpointError(
                f'{path} has a {STATE}/ item but is not a numbered step directory.'
            )
        workdir, which = path.parent.parent, int(path.name)
        if path.parent.name != 'checkpoints':  # copied out of its run: read it directly
            return path, int(path.name), _read_host_item(path), None
    elif path.name == 'checkpoints':
        workdir = path.parent
    elif (path / 'checkpoints').is_dir():
        workdir = path
    else:
        entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise CheckpointError(
            f'No checkpoint at {path}: expected a training workdir (with checkpoints/), a '
            f'checkpoints/ directory, one step directory or a ghostnet_jax.convert output '
            f'({CONVERT_INFO}); it contains {entries or "nothing"}.'
        )
    with _checkpointer(workdir) as ckpt:
        if which == 'best' and ckpt.best_step() is None and ckpt.all_steps():
            which = 'latest'  # e.g. a run stopped before any validation
        step, host = ckpt.read_host(which)
        return ckpt.directory / str(step), step, host, workdir


def _run_config(workdir: Path | None) -> dict:
    """The run's config.json as a dict ({} when there is none or it is unreadable)."""
    config = workdir / 'config.json' if workdir is not None else None
    if config is None or not config.is_file():
        return {}
    try:
        return json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _checkpointer(workdir: Path) -> Checkpointer:
    """Read-only, ranking 'best' by the run's own checkpoint settings when it has them."""
    settings = _run_config(workdir).get('checkpoint', {}) or {}
    keep = {k: settings[k] for k in ('best_metric', 'best_mode') if k in settings}
    return Checkpointer(workdir, read_only=True, **keep)


def _read_host_item(step_dir: Path) -> dict:
    import orbax.checkpoint as ocp

    try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
            return dict(ckptr.restore(step_dir / 'host', args=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; all mean "unreadable"
        raise CheckpointError(
            f'{step_dir} has no readable host state: {type(e).__name__}: {str(e)[:300]}'
        ) from e


def read_eval_variables(step_dir: Path) -> dict[str, Any]:
    """{'params', 'batch_stats'} the trainer evaluates, as host arrays: the EMA copies
    (ema_params / ema_batch_stats) where the run kept them, else the live ones. Only
    those subtrees are read, never the optimizer state."""
    import orbax.checkpoint as ocp

    item = step_dir / STATE
    try:
        ckptr = ocp.PyTreeCheckpointer()
        tree = ckptr.metadata(item).item_metadata.tree
        chosen = {}
        for name, ema in (('params', 'ema_params'), ('batch_stats', 'ema_batch_stats')):
            if _has_arrays(tree.get(ema)):
                chosen[name] = ema
            elif name in tree:
                chosen[name] = name
            else:
                raise KeyError(f'state item has no {name!r}; it has {sorted(tree)}')
        subset = {key: tree[key] for key in chosen.values()}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), subset)
        restored = ckptr.restore(
            item,
            args=ocp.args.PyTreeRestore(
                item=subset, restore_args=restore_args, partial_restore=True
            ),
        )
    except Exception as e:
        raise CheckpointError(
            f'Cannot read the weights in {item}: {type(e).__name__}: {str(e)[:500]}'
        ) from e
    return {name: restored[key] for name, key in chosen.items()}


def _has_arrays(tree: Any) -> bool:
    return tree is not None and len(jax.tree.leaves(tree)) > 0


def _read_converted(path: Path) -> tuple[ModelSpec, Preprocessing, dict]:
    from ghostnet_jax.serving.converted import serving_metadata
    from ghostnet_jax.training.pretrained import converted_info, load_converted

    try:
        info = converted_info(path)
        if SPEC_KEY in info:
            spec = ModelSpec.from_json(info[SPEC_KEY])
            prep = Preprocessing.from_json(info[PREPROCESSING_KEY])
        else:  # written before convert stored a spec: the defaults convert records now
            spec, prep, _ = serving_metadata(info['model'], int(info['num_classes']))
        variables = load_converted(path)
    except Exception as e:  # a damaged record or array store: one message, one exit code
        raise CheckpointError(
            f'Cannot load the converted weights in {path}: {type(e).__name__}: {str(e)[:500]}'
        ) from e
    return (
        spec,
        prep,
        {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})},
    )


def _check_shapes(model: nn.Module, prep: Preprocessing, variables: dict, path: Path) -> None:
    """The stored arrays must be exactly what the rebuilt model expects (a spec that does
    not match its weights would otherwise fail later, or silently broadcast)."""
    images = jax.ShapeDtypeStruct((1, *prep.image_shape), jnp.float32)
    expected = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    want = {
        jax.tree_util.keystr(p): tuple(v.shape)
        for p, v in jax.tree_util.tree_leaves_with_path(
            {k: expected.get(k, {}) for k in ('params', 'batch_stats')}
        )
    }
    have = {
        jax.tree_util.keystr(p): tuple(np.shape(v))
        for p, v in jax.tree_util.tree_leaves_with_path(variables)
    }
    if want != have:
        missing = sorted(set(want) - set(have))[:5]
        extra = sorted(set(have) - set(want))[:5]
        shapes = [f'{k}: {have[k]} vs {want[k]}' for k in want if k in have and have[k] != want[k]][
            :5
        ]
        raise CheckpointError(
            f'The weights in {path} do not fit the stored model spec '
            f'({model.__class__.__name__}): missing {missing}, unexpected '
            f'{extra}, misshapen {shapes}.'
        )
