"""Helpers for the study command tests (tests/test_study_*.py): the real CLIs in
subprocesses on train_harness's generated folder dataset, with the compile flags and the
persistent compilation cache the trainer tests use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import forked_cli
import train_harness as h


class Cli:
    """Starts `python -m ghostnet_jax.<command>` runs on one dataset with shared caches."""

    def __init__(self, root: Path, per_class: int = h.PER_CLASS):
        self.root = root
        self.data = h.make_dataset(root / 'data', per_class=per_class)
        # The session's compilation cache (tests/conftest.py): the trainer tests compile the
        # same programs.
        self.trainer = h.Trainer(
            root,
            self.data,
            root / 'data_cache',
            Path(os.environ['GHOSTNET_JAX_TEST_COMPILE_CACHE']),
        )

    def overrides(self, epochs: int = 2) -> list[str]:
        return [
            f'--config.data.source=folder:{self.data}',
            f'--config.data.cache_dir={self.trainer.data_cache}',
            '--config.model.conv_impl=native',
            f'--config.num_epochs={epochs}',
            '--config.report=False',
        ]  # test_study_report turns it back on

    def start(self, command: str, *args: str, log: str, epochs: int = 2) -> Proc:
        argv = [
            sys.executable,
            '-m',
            f'ghostnet_jax.{command}',
            f'--config={h.SMOKE}',
            *self.overrides(epochs),
            *args,
        ]
        if command == 'report':
            argv = [sys.executable, '-m', 'ghostnet_jax.report', *args]
        path = self.root / f'{log}.log'
        proc = forked_cli.start(argv, self.trainer.env(), h.REPO, path, cpus=h.one_core())
        return Proc(proc, path, argv)


class Proc:
    def __init__(self, proc: subprocess.Popen | forked_cli.Forked, log: Path, argv: list[str]):
        self.proc, self.log, self.argv = proc, log, argv

    def wait(self, timeout: float = 600) -> Proc:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self

    @property
    def rc(self) -> int:
        return self.proc.returncode

    @property
    def output(self) -> str:
        return self.log.read_text(errors='replace')

    def check(self, rc: int = 0) -> Proc:
        self.wait()
        assert self.rc == rc, f'exit {self.rc} (wanted {rc}) for {self.argv}\n{self.output[-5000:]}'
        return self


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
