"""The layer-table CLI: rows, totals and formats."""
import csv
import io

import pytest

from ghostnet_jax import summary


def test_text_summary_lists_layers_and_official_totals(capsys):
    assert summary.main(['--model', 'ghostnet_cifar_100']) == 0
    out = capsys.readouterr().out
    assert 'conv_stem' in out and 'blocks_6_3/se/conv_reduce' in out and 'classifier' in out
    assert 'trainable params: 3,913,790' in out
    assert 'BatchNorm buffers (mean+var, not trained): 21,872' in out
    assert '(42.68M)' in out


def test_csv_rows_add_up_to_the_totals(capsys):
    summary.main(['--model', 'ghost_resnet56', '--format', 'csv'])
    lines = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader(io.StringIO('\n'.join(l for l in lines if not l.startswith('#')))))
    # Every parameter belongs to exactly one leaf layer, so the rows sum to the total.
    assert sum(int(r["params"]) for r in rows) == 438_154
    stem = rows[0]
    assert (stem['layer'], stem['type'], stem['input'], stem['output']) == \
        ('stem/conv', 'Conv', '32x32x3', '32x32x16')
    assert stem['params'] == str(3 * 3 * 3 * 16) and stem['MACs'] == str(32 * 32 * 16 * 27)


def test_markdown_and_imagenet_default_size(capsys):
    summary.main(['--model', 'ghostnet_100', '--format', 'markdown', '--num-classes', '10'])
    out = capsys.readouterr().out
    assert out.startswith('| layer | type |') and '224x224x3' in out
    assert 'trainable params: 3,914,318' in out


def test_unknown_model_lists_valid_names(capsys):
    with pytest.raises(SystemExit):
        summary.main(['--model', 'ghostnet_7'])
    err = capsys.readouterr().err
    assert 'ghostnet_cifar_130' in err and 'ghost_vgg16' in err
