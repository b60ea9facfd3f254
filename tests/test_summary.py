"""The layer-table CLI: rows, totals and formats."""

import csv
import io
import re

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
    assert sum(int(r['params']) for r in rows) == 438_154
    stem = rows[0]
    assert (stem['layer'], stem['type'], stem['input'], stem['output']) == (
        'stem/conv',
        'Conv',
        '32x32x3',
        '32x32x16',
    )
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


def _csv_rows(capsys, argv):
    assert summary.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader(io.StringIO('\n'.join(l for l in lines if not l.startswith('#')))))
    totals = {
        l[2:].split(',')[0]: int(l.rsplit(',', 1)[1].split()[0]) for l in lines if l.startswith('#')
    }
    return {r['layer']: r for r in rows}, totals


def test_ghostnetv3_training_and_folded_forms_and_dfc_macs(capsys):
    argv = ['--model', 'ghostnetv3_cifar_tiny', '--format', 'csv']
    train, train_totals = _csv_rows(capsys, argv)
    folded, folded_totals = _csv_rows(capsys, argv + ['--reparameterized'])
    macs = lambda rows: sum(int(r['MACs']) for r in rows.values())
    # DFC attention: its convs count at the pooled (half) size, a 1x5 depthwise conv 5 MACs
    # per output value; pooling, sigmoid, upsampling and the gate have no rows.
    h, w, _ = map(int, train['blocks_2_0/ghost1/primary_rpr_conv_0/conv']['input'].split('x'))
    channels = int(train['blocks_2_0/ghost1/dfc/conv']['output'].split('x')[-1])
    row = train['blocks_2_0/ghost1/dfc/conv_h']
    assert row['input'] == row['output'] == f'{h // 2}x{w // 2}x{channels}'
    assert int(row['MACs']) == h // 2 * (w // 2) * channels * 5
    assert not [name for name in train if 'pool' in name.lower() or 'sigmoid' in name]
    # Folding leaves one conv (with bias) per branch group, as costly as one branch: the
    # MACs saved are exactly those of the other branches.
    assert 'blocks_1_0/conv_dw' in folded and 'blocks_1_0/dw_rpr_conv_0/conv' in train
    assert folded['blocks_1_0/conv_dw']['MACs'] == train['blocks_1_0/dw_rpr_conv_0/conv']['MACs']
    extra = sum(
        int(r['MACs'])
        for name, r in train.items()
        if re.search(r'_rpr_(conv_[12]|scale)/conv$', name)
    )
    assert macs(train) - macs(folded) == extra > 0
    assert train_totals['MACs per image (convs + dense'] == macs(train)
    assert not [name for name in folded if '_rpr_' in name]


def test_reparameterized_needs_a_ghostnetv3(capsys):
    assert summary.main(['--model', 'ghostnet_cifar_tiny', '--reparameterized']) == 2
    assert 'ghostnetv3' in capsys.readouterr().err
