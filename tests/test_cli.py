"""What every command shares (ghostnet_jax/cli/): one flag convention with the old
spellings as aliases, config errors before anything heavy, one set of exit codes and one
verbosity rule, and the layering (no library module imports a command)."""

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import train_harness as h

from ghostnet_jax.cli import errors, flags

PACKAGE = h.REPO / 'ghostnet_jax'
COMMANDS = (
    'train',
    'evaluate',
    'predict',
    'export',
    'sanity',
    'lr_find',
    'sweep',
    'report',
    'summary',
    'convert',
    'benchmark',
    'prepare_data',
)
LIBRARY = ('models', 'data', 'training', 'serving', 'study', 'benchmarking')


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f'{node.module}.{a.name}' for a in node.names}
    return names


def test_no_library_module_imports_a_command():
    commands = {f'ghostnet_jax.{c}' for c in COMMANDS} | {'ghostnet_jax.cli'}
    offenders = {}
    for folder in LIBRARY:
        for path in (PACKAGE / folder).rglob('*.py'):
            bad = {
                n
                for n in _imports(path)
                if n in commands or any(n.startswith(c + '.') for c in commands)
            }
            if bad:
                offenders[str(path.relative_to(h.REPO))] = sorted(bad)
    assert not offenders, offenders
    for command in COMMANDS:  # and every command is where a user runs it
        assert (PACKAGE / f'{command}.py').is_file(), command


def test_the_package_ships_no_c_source_and_starts_no_compiler():
    sources = [p for p in PACKAGE.rglob('*') if p.suffix in ('.c', '.cc', '.cpp', '.h', '.so')]
    assert not sources, sources
    for path in PACKAGE.rglob('*.py'):
        text = path.read_text()
        for needle in ("which('cc')", "which('gcc')", "'-shared'", "os.environ.get('CC')"):
            assert needle not in text, (path, needle)


def test_kebab_case_flags_with_the_old_snake_case_spellings_as_aliases():
    parser = flags.command_parser('prog', None, config=True)
    flags.add(parser, '--max-steps', type=int, default=300)
    flags.add(parser, '--shuffle-labels', action='store_true')
    for argv in (['--max-steps', '7', '--shuffle-labels'], ['--max_steps=7', '--shuffle_labels']):
        args, config = flags.parse(parser, argv)
        assert (args.max_steps, args.shuffle_labels) == (7, True)
        assert config.model.name == 'ghostnet_cifar_100'  # the default config
    with pytest.raises(SystemExit):  # no prefix guessing
        parser.parse_args(['--max', '7'])


def test_config_file_and_overrides_parse_as_ml_collections_does():
    parser = flags.command_parser('prog', None, config=True)
    args, config = flags.parse(
        parser,
        [
            f'--config={h.SMOKE}',
            '--config.batch_size',
            '4',
            '--config.optimizer.learning_rate=0.5',
            '--config.data.augment.flip=False',
        ],
    )
    assert args.config == h.SMOKE
    assert (
        config.model.name,
        config.batch_size,
        config.optimizer.learning_rate,
        config.data.augment.flip,
    ) == ('ghostnet_cifar_tiny', 4, 0.5, False)


@pytest.mark.parametrize(
    'argv, needle',
    [
        (['--config.optimzer.learning_rate=0.1'], 'Did you mean "optimizer"'),
        (['--config.batch_size=abc'], 'batch_size'),
        (['--config=configs/cpu_houre.py'], 'Did you mean configs/cpu_hour.py'),
    ],
)
def test_bad_overrides_are_one_config_error(argv, needle):
    from ghostnet_jax.training.config_checks import ConfigError

    parser = flags.command_parser('prog', None, config=True)
    with pytest.raises(ConfigError, match=needle.replace('(', r'\(').replace('.', r'\.')):
        flags.parse(parser, argv)


def test_a_bad_config_fails_in_seconds_before_any_data_or_workdir(tmp_path):
    """The data source does not exist either: a config error must be what is reported,
    so the config was checked before anything touched the data (or created the workdir)."""
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(h.REPO))
    common = [f'--workdir={tmp_path / "run"}', f'--config.data.source=folder:{tmp_path / "none"}']
    cases = (
        ('--config.optimzer.learning_rate=0.1', 'Did you mean "optimizer"'),
        ('--config.batch_size=-4', 'batch_size must be positive'),
        ('--config.optimizer.name=sgdd', 'optimizer.name'),
    )
    # The three at once: each is one Python process importing the package.
    start = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, '-m', 'ghostnet_jax.train', *common, override],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=h.REPO,
        )
        for override, _ in cases
    ]
    for proc, (override, needle) in zip(procs, cases):
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr[-3000:]
        message = [line for line in stderr.splitlines() if 'error:' in line]
        assert len(message) == 1 and needle in message[0], stderr[-3000:]
        assert 'Traceback' not in stderr
        print(f'{override}: exit 2 after {time.time() - start:.1f} s')
    assert not (tmp_path / 'run').exists()


def test_lr_find_refuses_an_inverted_range_before_any_work(tmp_path, capsys):
    from ghostnet_jax import lr_find

    code = lr_find.main(
        [f'--config={h.SMOKE}', '--min-lr=1', '--max-lr=0.1', f'--workdir={tmp_path / "x"}']
    )
    err = capsys.readouterr().err
    assert code == errors.USAGE and '--min-lr < --max-lr' in err and 'swap' in err, err
    assert not (tmp_path / 'x').exists()


@pytest.mark.parametrize(
    'value, on',
    [
        ('1', True),
        ('true', True),
        ('on', True),
        ('0', False),
        ('false', False),
        ('', False),
        ('no', False),
    ],
)
def test_one_verbosity_rule(monkeypatch, value, on):
    monkeypatch.setenv(errors.VERBOSE_ENV, value)
    assert errors.verbose([]) is on
    assert errors.verbose(['--verbose']) is True


def test_exit_codes_of_expected_failures():
    import errno

    from ghostnet_jax.data.errors import CorruptImageError
    from ghostnet_jax.optional import MissingExtraError
    from ghostnet_jax.training.checkpoints import CheckpointError
    from ghostnet_jax.training.config_checks import ConfigError
    from ghostnet_jax.training.loop_state import NonFiniteLossError

    cases = [
        (ConfigError('x'), errors.USAGE),
        (errors.UsageError('x'), errors.USAGE),
        (MissingExtraError('export-onnx', 'The ONNX export'), errors.USAGE),
        (NonFiniteLossError('x'), errors.NONFINITE),
        (CorruptImageError('x'), errors.DATA),
        (CheckpointError('x'), errors.CHECKPOINT),
        (OSError(errno.ENOSPC, 'No space left on device', '/w'), errors.STORAGE),
    ]
    for error, code in cases:
        assert errors.classify(error)[0] == code, error
    assert errors.classify(RuntimeError('a bug')) is None
    assert "pip install 'ghostnet_jax[export-onnx]'" in str(cases[2][0])


def test_an_unexpected_error_prints_its_traceback_and_exits_1(capsys):
    def body():
        raise RuntimeError('a bug')

    assert errors.run_command('prog', body, []) == errors.UNEXPECTED
    err = capsys.readouterr().err
    assert 'Traceback' in err and 'prog: unexpected error: RuntimeError: a bug' in err


def test_every_command_has_help_in_the_one_convention():
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(h.REPO))
    script = (
        'import importlib, sys\n'
        'for name in sys.argv[1:]:\n'
        '    try:\n'
        "        importlib.import_module('ghostnet_jax.' + name).main(['--help'])\n"
        '    except SystemExit as e:\n'
        '        assert e.code == 0, (name, e.code)\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', script, *COMMANDS],
        env=env,
        cwd=h.REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    helps = out.stdout.split('usage: ')[1:]
    assert len(helps) == len(COMMANDS) and all('--verbose' in text for text in helps)
    options = {line.split()[0] for line in out.stdout.splitlines() if line.strip().startswith('--')}
    assert not [o for o in options if '_' in o.split(',')[0] and o != '--config.FIELD'], options
    json.dumps(sorted(options))
