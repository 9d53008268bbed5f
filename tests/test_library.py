"""The chapter's code (d2l_peft, made from the #@save cells) is right."""
import pytest
import torch
from transformers import BertConfig, BertModel

import d2l_peft as d2lp

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32)


class Tokenizer:
    """Word i -> token id i + 3, between [CLS] = 1 and [SEP] = 2; pads with
    0, as a Hugging Face tokenizer does."""
    def __call__(self, sentences, truncation, max_length, padding=False,
                 return_tensors=None):
        ids = [([1] + [int(w) + 3 for w in s.split()] + [2])[:max_length]
               for s in sentences]
        if not padding:
            return {'input_ids': ids}
        n = max(map(len, ids))
        pad = lambda x, value: x + [value] * (n - len(x))
        return {'input_ids': torch.tensor([pad(x, 0) for x in ids]),
                'attention_mask': torch.tensor([pad([1] * len(x), 0)
                                                for x in ids])}


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
        longest = mask.sum(1).max().item()  # rounded up to a multiple of 8
        assert X.shape[1] == min(8 * -(-longest // 8), batches.X.shape[1])

        padding += (mask == 0).sum().item()
        seen += [tuple(row[m.bool()].tolist()) for row, m in zip(X, mask)]
        epochs.append(y)
    expected = [tuple(ids) for ids in Tokenizer()(X_all, True, 10)['input_ids']]
    assert sorted(seen) == sorted(expected) and len(batches) == 32
    width = lambda ids: min(8 * -(-max(map(len, ids)) // 8), 10)
    unsorted = sum(width(expected[i:i + 16]) * len(expected[i:i + 16])
                   for i in range(0, 500, 16)) - sum(map(len, expected))
    assert padding < 0.8 * unsorted  # widths round up to 8 in both
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


def requires_grad(net):
    """Which parameters of `net` train, by name."""
    return {n: p.requires_grad for n, p in net.named_parameters()}


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


def test_batches_are_built_once_and_move_to_the_device():
    X_all, y_all = sentences(100)
    batches = d2lp.SentenceBatches(X_all, y_all, Tokenizer(), 16, 10, True)
    assert batches.X.shape == batches.mask.shape == (100, 10)
    assert batches.to(torch.device('cpu')) is batches
    seen = torch.cat([y for _, _, y in batches])
    # The pass's order maps every yielded example to its place in the data
    assert sorted(batches.order.tolist()) == list(range(100))
    assert torch.equal(seen, torch.tensor(y_all)[batches.order])


@pytest.mark.parametrize('data,error', [
    ((['1 2', '3'], [0]), '2 sentences but 1 labels'),
    (([], []), 'no sentences'),
    (('1 2 3', [0, 1, 0, 1, 0]), 'not one string')])
def test_sentence_batches_refuse_bad_data(data, error):
    with pytest.raises((ValueError, TypeError), match=error):
        d2lp.SentenceBatches(*data, Tokenizer(), 16, 10, True)


@pytest.mark.parametrize('capability,dtype', [
    ((7, 5), torch.float16), ((7, 0), torch.float16),
    ((8, 0), torch.bfloat16), ((8, 9), torch.bfloat16),
    ((9, 0), torch.bfloat16)])
def test_mixed_precision_follows_the_compute_capability(capability, dtype):
    """A T4 (7.5) answers torch.cuda.is_bf16_supported() with True but
    only emulates bfloat16: the capability decides."""
    assert d2lp.mixed_precision(torch.device('cuda'), capability) == dtype
    assert d2lp.mixed_precision(torch.device('cpu')) is None
    assert not d2lp.grad_scaler(torch.device('cpu')).is_enabled()


def small_run(**kwargs):
    """Arguments of a tiny training run on the CPU."""
    train = d2lp.SentenceBatches(*sentences(64), Tokenizer(), 32, 16, True)
    dev = d2lp.SentenceBatches(*sentences(32, seed=1), Tokenizer(), 32, 16,
                               False)
    return dict(dict(net=tiny_classifier(), train_iter=train, dev_iter=dev,
                     num_epochs=1, lr=1e-3, device=torch.device('cpu')),
                **kwargs)


@pytest.mark.parametrize('kwargs,error', [
    (dict(warmup=2), 'warmup=2 is the fraction'),
    (dict(warmup=1.0), 'warmup=1.0 is the fraction'),
    (dict(warmup=-0.1), 'warmup=-0.1'),
    (dict(num_epochs=0), 'num_epochs=0'),
    (dict(num_epochs=1.5), 'num_epochs=1.5'),
    (dict(lr=0), 'lr=0'),
    (dict(net=tiny_classifier().requires_grad_(False)), 'nothing to train')])
def test_training_refuses_bad_arguments(kwargs, error):
    run = small_run(**kwargs)
    before = {n: p.clone() for n, p in run['net'].named_parameters()}
    with pytest.raises(ValueError, match=error):
        d2lp.train_classifier(**run)
    assert all(torch.equal(p, before[n])
               for n, p in run['net'].named_parameters())


def test_labels_the_classifier_cannot_output_are_refused():
    X_all, y_all = sentences(32, seed=1)
    dev = d2lp.SentenceBatches(X_all, [2] + y_all[1:], Tokenizer(), 32, 16,
                               False)
    with pytest.raises(ValueError, match='dev labels range from 0 to 2.*'
                                         '2 outputs.*num_classes=3'):
        d2lp.train_classifier(**small_run(dev_iter=dev))
    with pytest.raises(ValueError, match='at least 2 classes'):
        d2lp.BERTClassifier(tiny_classifier().encoder, 1)


def test_the_learning_rate_schedule_warms_up_and_decays(monkeypatch):
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    rates, train_batch = [], d2lp.train_batch

    def recording(net, X, mask, y, loss, optimizer, scaler):
        rates.append(optimizer.param_groups[0]['lr'])
        return train_batch(net, X, mask, y, loss, optimizer, scaler)
    monkeypatch.setattr(d2lp, 'train_batch', recording)
    run = small_run(num_epochs=5, warmup=0.2)  # 2 steps an epoch
    d2lp.train_classifier(**run)
    assert len(rates) == 10 and all(r > 0 for r in rates)
    assert rates[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert rates[2:] == sorted(rates[2:], reverse=True)
    # A single optimizer step, and no warm-up at all, also train
    for kwargs in [dict(train_iter=d2lp.SentenceBatches(
            *sentences(8), Tokenizer(), 32, 16, True)), dict(warmup=0)]:
        assert d2lp.train_classifier(**small_run(**kwargs))['trainable']


def test_results_say_when_the_run_was_reduced(capsys, monkeypatch):
    monkeypatch.setenv('D2L_PEFT_SMOKE', 'yes')
    assert d2lp.train_classifier(**small_run())['reduced'] is True
    assert '(reduced mode)' in capsys.readouterr().out
    monkeypatch.setenv('D2L_PEFT_SMOKE', 'off')
    assert d2lp.train_classifier(**small_run())['reduced'] is False
    assert '(reduced mode)' not in capsys.readouterr().out
