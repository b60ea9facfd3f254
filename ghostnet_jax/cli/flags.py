"""One flag convention for every command: `--kebab-case` options (the `--snake_case`
spellings of earlier versions stay accepted as aliases), `--verbose`, and for the commands
that take a config, `--config FILE` plus `--config.FIELD=VALUE` overrides with
ml_collections' own parsing (a misspelled field fails with a "did you mean" hint).

    parser = flags.command_parser('python -m ghostnet_jax.sanity', __doc__, config=True)
    flags.add(parser, '--sample-size', type=int, default=256, help='...')
    args, config = flags.parse(parser, argv)
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import re
from pathlib import Path

import ml_collections

from ghostnet_jax.cli.errors import UsageError

_CONFIG_ARG = re.compile(r'^--config(\.|=|$)')


def default_config_file() -> str:
    from ghostnet_jax.configs import default

    return str(Path(default.__file__))


def command_parser(prog: str, doc: str | None, config: bool = False) -> argparse.ArgumentParser:
    """A parser with the shared conventions: the module docstring as help, no abbreviated
    options (so an alias can never be mistaken for a prefix), `--verbose`, and for
    config-taking commands the `--config` documentation (parsed by `parse`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add(
        parser,
        '--verbose',
        action='store_true',
        help='tracebacks for expected failures too (or GHOSTNET_JAX_VERBOSE=1)',
    )
    if config:
        group = parser.add_argument_group('config')
        group.add_argument(
            '--config',
            metavar='FILE',
            default=None,
            help='config file, e.g. configs/cpu_hour.py (default: the default '
            'CIFAR-10 recipe); FILE:ARG passes ARG to its get_config',
        )
        group.add_argument(
            '--config.FIELD',
            metavar='VALUE',
            dest='_config_field_help',
            help='override one config field, e.g. --config.batch_size=64 '
            '(repeatable; see docs/training.md for the fields)',
        )
    return parser


def add(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, *more: str, **kwargs
) -> argparse.Action:
    """`parser.add_argument` with the kebab-case `name` and its snake_case alias."""
    names = [name, *more]
    alias = '--' + name[2:].replace('-', '_')
    if name.startswith('--') and alias != name:
        names.append(alias)
    return parser.add_argument(*names, **kwargs)


def checkpoint(text: str) -> str | int:
    """A --checkpoint value: best, latest or a step number."""
    if text in ('best', 'latest'):
        return text
    if text.isdigit():
        return int(text)
    raise UsageError(f'--checkpoint must be best, latest or a step number, got {text!r}.')


def split_config_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(config arguments, the rest): `--config FILE`, `--config=FILE`, `--config.X=V` and
    `--config.X V` go to the config, in order."""
    config, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if _CONFIG_ARG.match(arg):
            config.append(arg)
            if '=' not in arg and i + 1 < len(argv):
                config.append(argv[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return config, rest


def load_config(
    config_args: list[str], prog: str = 'ghostnet_jax'
) -> tuple[ml_collections.ConfigDict, str]:
    """The config that `--config FILE --config.X=V ...` describe, and its file. Raises
    ConfigError, one paragraph, for a missing file, an unknown field or a bad value."""
    from absl import flags as absl_flags
    from ml_collections import config_flags

    from ghostnet_jax.training.config_checks import ConfigError

    argv = [prog, *_joined(config_args)]
    file = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if file is not None:
        _check_config_file(file)
    argv = [a for a in argv if not a.startswith('--config=')]
    values = absl_flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(
            'config',
            _read_config_file(file or default_config_file()),
            'config',
            flag_values=values,
            lock_config=True,
            sys_argv=argv,
        )
        values(argv)
        config = values.config
    except KeyError as e:  # an unknown field: ml_collections adds "Did you mean ...?"
        raise ConfigError(
            f'unknown config field in {_overrides(argv)}: {_key_message(e)}. '
            'Fields are listed in docs/training.md.'
        ) from None
    except (absl_flags.Error, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f'cannot apply {_overrides(argv)}: {e}') from None
    config.unlock()
    return config, file or default_config_file()


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, ml_collections.ConfigDict | None]:
    """Parses `argv` (default sys.argv[1:]); returns the arguments and, for config-taking
    parsers, the config (ConfigError for a bad one, before anything heavy runs)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    takes_config = any(a.option_strings == ['--config'] for a in parser._actions)
    if not takes_config:
        return parser.parse_args(argv), None
    config_args, rest = split_config_args(argv)
    args = parser.parse_args(rest)
    config, args.config = load_config(config_args, parser.prog)
    return args, config


def _joined(args: list[str]) -> list[str]:
    """`--config.X V` as `--config.X=V` (absl reads both; one form is simpler to scan)."""
    out, i = [], 0
    while i < len(args):
        if '=' not in args[i] and i + 1 < len(args) and not args[i + 1].startswith('--'):
            out.append(f'{args[i]}={args[i + 1]}')
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def _read_config_file(spec: str) -> ml_collections.ConfigDict:
    """`get_config()` of the config file `spec` (`FILE` or `FILE:ARG`, which passes ARG),
    loaded with importlib's current API (ml_collections' own loader uses the deprecated
    `load_module`)."""
    path, _, arg = spec.partition(':')
    path = Path(path)
    module_spec = importlib.util.spec_from_file_location(f'ghostnet_jax_config_{path.stem}', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _check_config_file(file: str) -> None:
    from ghostnet_jax.training.config_checks import ConfigError

    path = Path(file.split(':', 1)[0])
    if path.is_file():
        return
    # Shipped with the package (pyproject.toml installs configs/ as ghostnet_jax.configs).
    from ghostnet_jax import configs

    folder = Path(configs.__file__).parent
    shipped = sorted(p.name for p in folder.glob('*.py') if not p.name.startswith('_'))
    close = difflib.get_close_matches(path.name, shipped, n=1)
    hint = f' Did you mean configs/{close[0]}?' if close else ''
    raise ConfigError(
        f'--config {file}: no such file.{hint} The shipped configs are '
        f'{", ".join(shipped)} (in the configs/ folder of the repository).'
    )


def _overrides(argv: list[str]) -> str:
    return ' '.join(a for a in argv[1:] if a.startswith('--config.')) or 'the config file'


def _key_message(error: KeyError) -> str:
    text = error.args[0] if error.args else str(error)
    return ' '.join(str(text).replace('\n', ' ').split())
