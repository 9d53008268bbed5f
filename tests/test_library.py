"""The chapter's code (d2l_peft, made from the #@save cells) is right."""
import pytest
import torch
from transformers import BertConfig, BertModel

import d2l_peft as d2lp

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32)


class Tokenizer:
    """Word i -> token id i + 3, between [CLS] = 1 and [SEP] = 2."""
    pad_token_id = 0

    def __call__(self, sentences, truncation, max_length):
        ids = [[1] + [int(w) + 3 for w in s.split()] + [2] for s in sentences]
        return {'input_ids': [x[:max_length] for x in ids]}


def sentences(n, seed=0):
    """Random 'sentences' of 1 to 12 words; label 1 iff word 7 occurs."""
    g = torch.Generator().manual_seed(seed)
    out, labels = [], []
    for _ in range(n):
        words = torch.randint(0, 40, (torch.randint(1, 13, (1,),
                                                    generator=g).item(),),
                              generator=g).tolist()
        out.append(' '.join(map(str, words)))
        labels.append(int(7 in words))
    return out, labels


def test_batches_cover_every_example_once_with_little_padding():
    X_all, y_all = sentences(500)
    batches = d2lp.SentenceBatches(X_all, y_all, Tokenizer(), batch_size=16,
                                   max_len=10, shuffle=True, pool=4)
    seen, padding, epochs = [], 0, []
    for X, mask, y in batches:
        assert X.shape == mask.shape and X.shape[0] == len(y) <= 16
        assert X.shape[1] <= 10 and mask[:, 0].all()
        assert ((X != 0) == mask.bool()).all()
        assert mask.sum(1).max() == X.shape[1]  # padded to the longest only
        padding += (mask == 0).sum().item()
        seen += [tuple(row[m.bool()].tolist()) for row, m in zip(X, mask)]
        epochs.append(y)
    expected = [tuple(ids) for ids in Tokenizer()(X_all, True, 10)['input_ids']]
    assert sorted(seen) == sorted(expected) and len(batches) == 32
    unsorted = sum(max(map(len, expected[i:i + 16])) * len(expected[i:i + 16])
                   for i in range(0, 500, 16)) - sum(map(len, expected))
    assert padding < unsorted / 2
    # Each epoch draws a new order; evaluation keeps one order.
    assert not torch.equal(torch.cat(epochs),
                           torch.cat([y for _, _, y in batches]))
    dev = d2lp.SentenceBatches(X_all, y_all, Tokenizer(), 16, 10, False)
    assert torch.equal(torch.cat([y for *_, y in dev]),
                       torch.cat([y for *_, y in dev]))


def tiny_classifier(seed=0, **config):
    """A small random BERT classifier, in evaluation mode; `config`
    overrides entries of TINY."""
    torch.manual_seed(seed)
    return d2lp.BERTClassifier(BertModel(BertConfig(**{**TINY, **config}),
                                         add_pooling_layer=False), 2).eval()


def inputs():
    """Three random sequences of seven tokens, without padding."""
    X = torch.randint(3, 50, (3, 7))
    return X, torch.ones_like(X)


def test_classifier_ignores_padding():
    net = tiny_classifier()
    X = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 5, 6, 7, 8, 2]])
    mask = (X != 0).long()
    both = net(X, mask)
    alone = net(X[:1, :4], mask[:1, :4])
    assert both.shape == (2, 2)
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=1e-5)


def test_count_parameters():
    net = tiny_classifier()
    trainable, total = d2lp.count_parameters(net)
    assert trainable == total == sum(p.numel() for p in net.parameters())
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    assert d2lp.count_parameters(net) == (16 * 2 + 2, total)


def test_training_learns_a_simple_task(monkeypatch):
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    train = d2lp.SentenceBatches(*sentences(2000), Tokenizer(), 32, 16, True)
    dev = d2lp.SentenceBatches(*sentences(300, seed=1), Tokenizer(), 64, 16,
                               False)
    net = tiny_classifier()
    before = d2lp.evaluate_accuracy(net, dev, torch.device('cpu'))
    result = d2lp.train_classifier(net, train, dev, num_epochs=3, lr=3e-3,
                                   device=torch.device('cpu'))
    assert result['dev_acc'] > 0.9 > before
    assert result['dev_acc'] == d2lp.evaluate_accuracy(net, dev,
                                                       torch.device('cpu'))
    assert result['peak_memory'] is None and result['sec_per_epoch'] > 0
    assert 0 < result['loss'] < 0.5


def test_frozen_parameters_stay_unchanged():
    net = tiny_classifier()
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    frozen = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    head = net.output.weight.clone()
    train = d2lp.SentenceBatches(*sentences(200), Tokenizer(), 32, 16, True)
    d2lp.train_classifier(net, train, train, 1, 1e-2,
                          device=torch.device('cpu'))
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert not torch.equal(net.output.weight, head)


def test_parameters_by_component_match_the_formulas():
    config = BertConfig()
    d, L, V, F = (config.hidden_size, config.num_hidden_layers,
                  config.vocab_size, config.intermediate_size)
    net = d2lp.BERTClassifier(BertModel(config), num_classes=2)
    counts = d2lp.parameters_by_component(net)
    assert sum(counts.values()) == d2lp.count_parameters(net)[1]
    for projection in ['query W_q', 'key W_k', 'value W_v',
                       'attention output W_o']:
        assert counts[projection] == L * (d * d + d)
    assert counts['feed-forward'] == L * (2 * d * F + F + d)
    assert counts['embeddings'] == (V + config.max_position_embeddings
                                    + config.type_vocab_size + 2) * d
    assert counts['LayerNorm'] == L * 2 * 2 * d
    assert counts['pooler'] == d * d + d
    assert counts['classification head'] == 2 * d + 2
    with pytest.raises(ValueError, match='no component'):
        d2lp.component_of('something.else')


def test_checkpoint_size_counts_the_serialized_tensors():
    state = tiny_classifier().state_dict()
    overhead = 64 * 20 * len(state)  # torch.save's archive entries, padding
    for dtype in [torch.float32, torch.float16]:
        state = {k: v.to(dtype) for k, v in state.items()}
        tensor_bytes = sum(v.numel() * v.element_size()
                           for v in state.values())
        size = d2lp.checkpoint_size(state)
        assert tensor_bytes < size < tensor_bytes + overhead


def test_memory_is_measured_only_on_a_gpu(capsys):
    result = d2lp.measure_training_memory(tiny_classifier(), 2, 8,
                                          device=torch.device('cpu'))
    assert result is None and 'only on a GPU' in capsys.readouterr().out


def test_show_results(capsys):
    d2lp.show_results({'full': dict(trainable=1234, dev_acc=0.9,
                                    sec_per_epoch=2.5, peak_memory=2e8),
                       'head': dict(trainable=7, dev_acc=0.5,
                                    sec_per_epoch=1.0, peak_memory=None)})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ['full', '1,234', '0.900', '2.5', '200']
    assert lines[2].split() == ['head', '7', '0.500', '1.0', 'n/a']


def test_training_leaves_no_figure_open_and_counts_trainable():
    from d2l import torch as d2l
    d2l.plt.close('all')
    net = tiny_classifier()
    net.encoder.requires_grad_(False)
    train = d2lp.SentenceBatches(*sentences(100), Tokenizer(), 32, 16, True)
    result = d2lp.train_classifier(net, train, train, 1, 1e-2,
                                   device=torch.device('cpu'))
    assert result['trainable'] == 16 * 2 + 2
    assert d2l.plt.get_fignums() == []  # shown once, then closed
