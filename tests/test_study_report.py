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
