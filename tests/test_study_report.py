"""`python -m ghostnet_jax.report`: every artefact of a real (tiny) run, consistent with the
run's own results.json."""

import json

import pytest
import study_harness as s
import train_harness as h

TEST_SPLIT = 'train[:50%]'  # 8 of the 16 images of each of the 3 classes
TEST_EXAMPLES = 3 * 8


@h.job('study_report')
def _run(t, root):
    cli = s.Cli(root)
    workdir = cli.root / 'run'
    # eval_flip: the report's predictions (ghostnet_jax.load) must average the mirrored
    # images as the trainer's evaluator did for results.json.
    cli.start(
        'train',
        f'--workdir={workdir}',
        f'--config.data.test_split={TEST_SPLIT}',
        '--config.report=True',
        '--config.eval_flip=True',
        log='train',
        epochs=3,
    ).check(0)
    # Training wrote the report itself at the end (config.report); the command rewrites it.
    assert (workdir / 'report' / 'report.md').is_file()
    report = cli.start('report', f'--workdir={workdir}', log='report').check(0)
    return workdir, report


@pytest.fixture(scope='module')
def run(trainer):
    return trainer.result('study_report')


def test_report_files_and_links(run):
    workdir, proc = run
    out = workdir / 'report'
    md = (out / 'report.md').read_text()
    for png in (
        'curves.png',
        'learning_rate.png',
        'gradients.png',
        'confusion.png',
        'misclassified.png',
    ):
        assert (out / png).stat().st_size > 0, png
        assert f']({png})' in md, png
    assert '## Diagnosis' in md and 'Verdict:' in md
    # One row per trained epoch in the epochs table (3 epochs; header and rule above).
    table = md.split('## Epochs', 1)[1].split('##', 1)[0].strip().splitlines()
    assert [row.split('|')[1].strip() for row in table[2:]] == ['1', '2', '3']
    assert 'Written:' in proc.output


def test_confusion_matrix_counts_every_test_image_once(run):
    workdir, _ = run
    pred = json.loads((workdir / 'report' / 'predictions.json').read_text())
    assert pred['split'] == 'test' and pred['spec'] == TEST_SPLIT
    matrix = pred['confusion']
    assert sum(map(sum, matrix)) == TEST_EXAMPLES
    assert [sum(row) for row in matrix] == [8, 8, 8]
    # The same checkpoint as the trainer's final evaluation, so the same per-class accuracy
    # as its (independent, count-based) evaluator wrote in results.json.
    results = json.loads((workdir / 'results.json').read_text())
    assert pred['step'] == results['step']
    for i, name in enumerate(pred['class_names']):
        assert matrix[i][i] / 8 == pytest.approx(results['test']['per_class_accuracy'][name])
    assert pred['misclassified'] == TEST_EXAMPLES - sum(matrix[i][i] for i in range(3))


def test_diagnosis_reads_the_runs_curves(run):
    workdir, _ = run
    diagnosis = json.loads((workdir / 'report' / 'diagnosis.json').read_text())
    assert diagnosis['verdict'] in ('overfitting', 'underfitting', 'good fit')
    val = h.val_epochs(workdir)
    last = val[max(val)]
    assert f'validation accuracy {last["accuracy"]:.4f}' in diagnosis['findings'][0]


def _metrics_jsonl(path, lrs_by_epoch, val_loss):
    """Two logged steps per epoch with the given rates; train loss 1.0 / 0.5 in epoch 1
    (mean 0.75), accuracy 0.25 / 0.75 (mean 0.5), then the same shifted by the epoch."""
    lines, step = [], 0
    for epoch, lrs in enumerate(lrs_by_epoch, 1):
        for i, lr in enumerate(lrs):
            step += 1
            lines.append(
                dict(
                    step=step,
                    epoch=epoch,
                    split='train',
                    loss=[1.0, 0.5][i] / epoch,
                    accuracy=[0.25, 0.75][i],
                    learning_rate=lr,
                )
            )
        lines.append(
            dict(
                step=step, epoch=epoch, split='val', loss=val_loss[epoch - 1], accuracy=0.1 * epoch
            )
        )
    path.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')


def test_epochs_table_shows_the_plateaus_cut_and_the_final_epoch(tmp_path):
    from ghostnet_jax.study.history import load_history
    from ghostnet_jax.study.report import epochs_lines

    # A constant 1e-3 halved after epoch 2 (the plateau's cut), then constant again.
    _metrics_jsonl(
        tmp_path / 'metrics.jsonl', [[1e-3, 1e-3], [1e-3, 1e-3], [5e-4, 5e-4]], [2.0, 1.5, 1.6]
    )
    history = load_history(tmp_path)
    rows = epochs_lines(history, {'checkpoint': 'best', 'epoch': 2}, plateau_factor=0.5)[2:-1]
    cells = [[c.strip() for c in row.strip('|').split('|')] for row in rows]
    assert [c[0] for c in cells] == ['1', '2', '3']
    # Train means of the two steps (hand-computed), validation as logged.
    assert cells[0][1:5] == ['0.7500', '0.5000', '2.0000', '0.1000']
    assert cells[1][1:5] == ['0.3750', '0.5000', '1.5000', '0.2000']
    assert [c[5] for c in cells] == ['0.001', '0.001', '0.0005']
    assert cells[0][6] == ''
    assert cells[1][6] == 'final weights (best epoch)'
    assert cells[2][6] == 'lr x0.5 (plateau, after epoch 2)'
    # Without the callback, or with a rate a schedule moves step by step, no cut is claimed.
    assert 'plateau' not in ''.join(epochs_lines(history, None, plateau_factor=None))
    _metrics_jsonl(
        tmp_path / 'metrics.jsonl', [[1e-3, 9.5e-4], [9e-4, 8.5e-4], [8e-4, 7e-4]], [2.0, 1.5, 1.6]
    )
    assert 'plateau' not in ''.join(epochs_lines(load_history(tmp_path), None, 0.5))
