"""`python -m ghostnet_jax.predict`: output formats against `evaluate`, and exit codes.

The reference is the evaluate CLI (the trainer's own evaluation code) on the same image
files: its accuracy and loss must equal those computed from predict's probabilities.
"""

import csv
import io
import json
import shutil

import pytest
import train_harness as h


def _predict(trainer, *args, timeout=300):
    return trainer.cli(['-m', 'ghostnet_jax.predict', *args], timeout=timeout)


def _labels(trainer):
    """path -> class index, from the folder names (classes are sorted folder names)."""
    classes = sorted(p.name for p in (trainer.data / 'train').iterdir())
    return {str(p): classes.index(p.parent.name) for p in (trainer.data / 'train').rglob('*.png')}


def test_json_probabilities_match_evaluate_on_the_same_files(trainer, base_run, tmp_path):
    import numpy as np

    run = tmp_path / 'run'  # evaluate writes into the workdir: keep base_run untouched
    shutil.copytree(base_run, run)
    evaluated = trainer.cli(
        [
            '-m',
            'ghostnet_jax.evaluate',
            '--workdir',
            run,
            '--source',
            f'folder:{trainer.data}',
            '--split',
            'train',
        ]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    [written] = run.glob('eval-folder*.json')
    reference = json.loads(written.read_text())

    out = _predict(
        trainer,
        '--workdir',
        base_run,
        '--format',
        'json',
        '--top-k',
        h.NUM_CLASSES,
        trainer.data / 'train',
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr
    result = json.loads(out.stdout)
    labels = _labels(trainer)
    assert len(result['predictions']) == len(labels) == reference['num_examples']
    assert result['step'] == reference['step'] and result['skipped'] == []
    correct, losses = [], []
    for record in result['predictions']:
        probs = {t['class_index']: t['probability'] for t in record['top_k']}
        assert len(probs) == h.NUM_CLASSES and abs(sum(probs.values()) - 1) < 1e-5
        label = labels[record['path']]
        correct.append(record['top_k'][0]['class_index'] == label)
        losses.append(-np.log(probs[label]))
    assert np.mean(correct) == pytest.approx(reference['accuracy'], abs=1e-9)
    assert np.mean(losses) == pytest.approx(reference['loss'], abs=1e-5)


def _predict_here(capsys, *args):
    """predict in this process: (exit code, stdout, stderr)."""
    from ghostnet_jax import predict

    code = predict.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_text_and_csv_formats_and_unreadable_images(trainer, base_run, tmp_path, capsys):
    folder = tmp_path / 'mixed'
    (folder / 'sub').mkdir(parents=True)
    for i, src in enumerate(sorted((trainer.data / 'train' / 'c1').glob('*.png'))[:3]):
        shutil.copy(src, folder / 'sub' / f'{i}.png')
    (folder / 'notes.txt').write_text('not an image, not a picture suffix: ignored')
    broken = folder / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 truncated jpeg')

    code, _, err = _predict_here(
        capsys, '--workdir', base_run, '--batch-size', 2, '--top-k', 2, folder
    )
    assert code == 4, err
    assert str(broken) in err and 'Traceback' not in err
    [line] = [line for line in err.splitlines() if str(broken) in line]  # one paragraph
    assert line.startswith('python -m ghostnet_jax.predict: error:') and '--skip-unreadable' in line

    code, stdout, err = _predict_here(
        capsys,
        '--workdir',
        base_run,
        '--format',
        'csv',
        '--top-k',
        2,
        '--skip-unreadable',
        '--batch-size',
        2,
        folder,
    )
    assert code == 0, err[-3000:]
    assert f'skipped unreadable image {broken}' in err
    assert err.strip().splitlines()[-1] == f'1 of 4 images were unreadable and skipped: {broken}'
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 3 * 2 and [r['rank'] for r in rows[:2]] == ['1', '2']
    assert {r['class_name'] for r in rows} <= {'c0', 'c1', 'c2'}
    assert float(rows[0]['probability']) >= float(rows[1]['probability'])

    out = _predict(
        trainer,
        '--workdir',
        base_run / 'checkpoints',
        '--checkpoint',
        'latest',
        '--top-k',
        1,
        folder / 'sub' / '0.png',
        folder / 'sub' / '1.png',
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(folder / 'sub' / '0.png') + ': c')
    assert out.stderr.strip() == ''  # no progress bar and no notices when not a TTY


@pytest.mark.parametrize(
    'args, code, message',
    [
        (['--workdir', '{missing}', '{image}'], 5, 'does not exist'),
        (['--workdir', '{run}', '--checkpoint', '99999', '{image}'], 5, 'available steps'),
        (['--workdir', '{run}', '{missing}'], 4, 'does not exist'),
        (['--workdir', '{run}', '--top-k', '0', '{image}'], 2, '--top-k'),
        (['--workdir', '{run}', '--checkpoint', 'newest', '{image}'], 2, '--checkpoint'),
        (['{image}'], 2, '--workdir'),
    ],
)
def test_exit_codes(trainer, base_run, tmp_path, args, code, message, capsys):
    # In-process (the CLI's own process is exercised above): each case fails before any
    # compile, and a subprocess would spend seconds starting Python and JAX for each.
    from ghostnet_jax import predict

    image = next((trainer.data / 'train' / 'c0').glob('*.png'))
    fill = dict(missing=tmp_path / 'missing', image=image, run=base_run)
    try:
        got = predict.main([str(a).format(**fill) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        got = e.code
    err = capsys.readouterr().err
    assert got == code, err
    assert message in err and 'Traceback' not in err


def test_verbose_shows_the_traceback(trainer, tmp_path, capsys):
    image = next((trainer.data / 'train' / 'c0').glob('*.png'))
    code, _, err = _predict_here(capsys, '--verbose', '--workdir', tmp_path, image)
    assert code == 5 and 'Traceback' in err


def test_progress_bar_only_on_a_terminal():
    from ghostnet_jax.serving.classify import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, drawn in ((io.StringIO(), False), (Terminal(), True)):
        bar = Progress(10, stream)
        bar.update(4)
        bar.update(6)
        bar.close()
        text = stream.getvalue()
        assert bool(text) == drawn
        if drawn:
            assert '\r[' in text and '10/10 images' in text and text.endswith('\n')
