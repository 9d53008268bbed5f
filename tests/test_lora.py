"""LoRA from scratch (chapter_finetuning_bert/lora.md): checks and errors."""
import pytest
import torch
from torch import nn
import d2l_peft as d2lp
from test_library import TINY, inputs, requires_grad, tiny_classifier

CONFIG = {'method': 'lora', 'r': 4, 'alpha': 8,
          'targets': ('query', 'value'), 'num_classes': 2}


def lora_net(r=4, alpha=8, seed=0, targets=('query', 'value')):
    net = tiny_classifier(seed)
    torch.manual_seed(1)  # the same LoRA initialization for every seed
    d2lp.apply_lora(net, r, alpha, targets)
    return net


def randomize_B(net):
    for m in net.modules():
        if isinstance(m, d2lp.LoRALinear):
            nn.init.normal_(m.B)


def test_starts_at_the_pretrained_function_and_counts_match_formula():
    base = tiny_classifier()
    X, mask = inputs()
    before = base(X, mask)
    names = d2lp.apply_lora(base, r=4, alpha=8)
    assert len(names) == 2 * TINY['num_hidden_layers']
    assert torch.equal(base(X, mask), before)
    d = TINY['hidden_size']
    trainable, total = d2lp.count_parameters(base)
    assert trainable == len(names) * 4 * (d + d) + 2 * d + 2
    assert {n.rsplit('.', 1)[-1] for n, p in base.named_parameters()
            if p.requires_grad} == {'A', 'B', 'weight', 'bias'}
    assert all(n.startswith('output.') for n, p in base.named_parameters()
               if p.requires_grad and n[-1] not in 'AB')


def test_forward_is_the_formula_and_merge_is_exact():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    lora = d2lp.LoRALinear(linear, r=2, alpha=3)
    nn.init.normal_(lora.B)
    X = torch.randn(4, 6)
    expected = X @ (linear.weight + 1.5 * lora.B @ lora.A).T + linear.bias
    torch.testing.assert_close(lora(X), expected)
    W = linear.weight.clone()
    lora.merge()
    torch.testing.assert_close(lora(X), expected)
    with pytest.raises(RuntimeError, match='already merged'):
        lora.merge()
    lora.unmerge()
    torch.testing.assert_close(linear.weight, W)
    with pytest.raises(RuntimeError, match='not merged'):
        lora.unmerge()


def test_only_lora_and_head_learn():
    net = lora_net()
    net.train()
    frozen = {n: p.clone() for n, p in net.named_parameters()
              if not p.requires_grad}
    X, mask = inputs()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad],
                            lr=1e-2)
    nn.functional.cross_entropy(net(X, mask), torch.tensor([0, 1, 1])
                                ).backward()
    assert all(p.grad is None for n, p in net.named_parameters()
               if n in frozen)
    B = next(m for m in net.modules() if isinstance(m, d2lp.LoRALinear)).B
    assert B.grad.abs().sum() > 0  # B = 0 still gets a gradient
    opt.step()
    for n, p in net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize('r', [0, -1, 17])
def test_impossible_rank(r):
    with pytest.raises(ValueError, match=f'rank r={r} is impossible.*16'):
        d2lp.LoRALinear(nn.Linear(16, 32), r, alpha=8)
    with pytest.raises(TypeError, match='wraps an nn.Linear'):
        d2lp.LoRALinear(nn.Conv1d(16, 32, 1), 4, alpha=8)


def test_unknown_target_lists_the_layers():
    net = tiny_classifier()
    with pytest.raises(ValueError) as e:
        d2lp.apply_lora(net, 4, 8, targets=('qery',))
    assert "'attention.self.query'" in str(e.value)
    assert "'intermediate.dense'" in str(e.value)
    assert all(p.requires_grad for p in net.parameters())  # left untouched


def test_save_and_load_reproduce_the_predictions(tmp_path):
    net = lora_net()
    randomize_B(net)
    X, mask = inputs()
    d2lp.save_trained(net, tmp_path / 'a.pt', CONFIG)
    fresh = lora_net()
    assert not torch.equal(fresh(X, mask), net(X, mask))
    d2lp.load_trained(fresh, tmp_path / 'a.pt', CONFIG)
    assert torch.equal(fresh(X, mask), net(X, mask))
    saved = torch.load(tmp_path / 'a.pt')
    assert set(saved['state']) == {n for n, p in net.named_parameters()
                                   if p.requires_grad}


def test_load_refuses_other_base_or_configuration(tmp_path):
    net = lora_net()
    d2lp.save_trained(net, tmp_path / 'a.pt', CONFIG)
    with pytest.raises(ValueError, match='another base model'):
        d2lp.load_trained(lora_net(seed=1), tmp_path / 'a.pt', CONFIG)
    with pytest.raises(ValueError, match="saved with .*'r': 4.*prepared "
                                         "with .*'r': 2"):
        d2lp.load_trained(lora_net(r=2, alpha=4), tmp_path / 'a.pt',
                          dict(CONFIG, r=2, alpha=4))
    with pytest.raises(ValueError, match='other parameters'):
        d2lp.load_trained(lora_net(targets=('query',)), tmp_path / 'a.pt',
                          CONFIG)


def lora_layers(net):
    return [m for m in net.modules() if isinstance(m, d2lp.LoRALinear)]


def test_merged_model_cannot_be_saved_or_loaded_into(tmp_path):
    net = lora_net()
    d2lp.save_trained(net, tmp_path / 'a.pt', CONFIG)
    for layer in lora_layers(net):
        layer.merge()
    with pytest.raises(RuntimeError, match='merged'):
        d2lp.save_trained(net, tmp_path / 'b.pt', CONFIG)
    W = {n: p.clone() for n, p in net.named_parameters()}
    with pytest.raises(RuntimeError, match='merged'):
        d2lp.load_trained(net, tmp_path / 'a.pt', CONFIG)
    assert all(torch.equal(p, W[n]) for n, p in net.named_parameters())


def test_save_after_merge_lora_is_refused(tmp_path):
    """merge_lora leaves plain nn.Linear layers: the trained A and B are
    gone, and a save would hold only the head."""
    net = d2lp.merge_lora(lora_net())
    assert not lora_layers(net)
    with pytest.raises(RuntimeError, match='merged'):
        d2lp.save_trained(net, tmp_path / 'a.pt', CONFIG)
    assert not (tmp_path / 'a.pt').exists()


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_merge_unmerge_save_load_round_trip(tmp_path, dtype):
    net = lora_net().to(dtype)
    for layer in lora_layers(net):  # updates of the weights' size, 0.02
        torch.nn.init.normal_(layer.B, std=0.02 / layer.scale)
    for layer in lora_layers(net):
        layer.merge()
        layer.unmerge()  # the base weights now differ in their last bits
    d2lp.save_trained(net, tmp_path / 'a.pt', CONFIG)
    fresh = lora_net().to(dtype)
    d2lp.load_trained(fresh, tmp_path / 'a.pt', CONFIG)
    X, mask = inputs()
    torch.testing.assert_close(fresh(X, mask), net(X, mask), atol=0.05,
                               rtol=0.05)


def test_fingerprint_tells_bases_apart_but_not_rounding():
    net = lora_net()
    fingerprint = d2lp.frozen_fingerprint(net)
    assert not d2lp.base_differences(fingerprint,
                                     d2lp.frozen_fingerprint(lora_net()))
    with torch.no_grad():  # rounding-sized changes are the same base
        for p in net.parameters():
            if not p.requires_grad:
                p.mul_(1 + 1e-6)
    assert not d2lp.base_differences(fingerprint,
                                     d2lp.frozen_fingerprint(net))
    assert d2lp.base_differences(fingerprint, d2lp.frozen_fingerprint(net),
                                 rtol=0)
    with torch.no_grad():  # a small fine-tuning step is another base
        net.encoder.encoder.layer[0].intermediate.dense.weight.add_(
            0.05 * torch.randn(32, 16))
    assert d2lp.base_differences(fingerprint, d2lp.frozen_fingerprint(
        net)) == ['encoder.encoder.layer.0.intermediate.dense.weight']


def test_load_refuses_a_file_not_from_save_trained(tmp_path):
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not written by save_trained'):
        d2lp.load_trained(lora_net(), tmp_path / 'other.pt', CONFIG)


@pytest.mark.parametrize('kwargs,error', [
    (dict(r=4, alpha=0), 'alpha=0'),
    (dict(r=4, alpha=-1), 'alpha=-1'),
    (dict(r=17, alpha=8), 'rank r=17'),
    (dict(r=2.0, alpha=8), 'rank r=2.0'),
    (dict(r=4, alpha=8, targets=('qery',)), 'no linear layer'),
    (dict(r=4, alpha=8, trainable=('outpt',)), 'no module named'),
    (dict(r=4, alpha=8, trainable='output'), "\\('output',\\)")])
def test_bad_arguments_leave_the_model_untouched(kwargs, error):
    net = tiny_classifier()
    before = requires_grad(net)
    with pytest.raises((ValueError, TypeError), match=error):
        d2lp.apply_lora(net, **kwargs)
    assert requires_grad(net) == before and not lora_layers(net)
    assert not hasattr(net, 'method')


def test_applying_lora_twice_is_refused():
    net = lora_net()
    before = requires_grad(net)
    with pytest.raises(ValueError, match='prepared for LoRA already'):
        d2lp.apply_lora(net, 4, 8, targets=('key',))
    assert requires_grad(net) == before  # the first LoRA still trains


def test_targets_as_peft_matches_them():
    names = lambda targets: d2lp.lora_targets(tiny_classifier(), targets)
    # A list matches name suffixes; 'output.dense' also ends the attention's
    assert names(['output.dense']) == [
        f'encoder.encoder.layer.{i}.{part}output.dense'
        for i in range(2) for part in ['attention.', '']]
    # One string is a regular expression for the whole name
    ffn = names(r'.*\.layer\.\d+\.(intermediate|output)\.dense')
    assert ffn == [f'encoder.encoder.layer.{i}.{part}.dense'
                   for i in range(2) for part in ['intermediate', 'output']]
    with pytest.raises(ValueError, match='regular expression'):
        names('query')  # not a name, and a regex must match it whole
    assert len(names(['query'])) == len(names(r'.*query')) == 2


def test_latency_is_positive_on_cpu():
    t = d2lp.measure_latency(lora_net(), batch_size=2, seq_len=8,
                             num_runs=3, device=torch.device('cpu'))
    assert 0 < t < 1


def test_compare_latency_times_every_model_and_restores_them(capsys):
    nets = {'base': tiny_classifier(), 'LoRA': lora_net()}
    trainable = {name: [p.requires_grad for p in net.parameters()]
                 for name, net in nets.items()}
    ms = d2lp.compare_latency(nets, batch_size=2, seq_len=8, num_rounds=3)
    assert set(ms) == {'base', 'LoRA'} and all(t > 0 for t in ms.values())
    assert capsys.readouterr().out.startswith('batch  2: base x1.00, LoRA x')
    for name, net in nets.items():
        assert [p.requires_grad for p in net.parameters()] == trainable[name]


def test_predict_and_subset_batches(monkeypatch, tmp_path):
    from test_library import Tokenizer, sentences
    monkeypatch.setattr(d2lp, 'load_sst2', lambda split: sentences(100))
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    batches = d2lp.subset_batches(Tokenizer(), 30, seed=3)
    again = d2lp.subset_batches(Tokenizer(), 30, seed=3)
    assert torch.equal(batches.X, again.X) and len(batches) == 1
    all_tokens = Tokenizer()(sentences(100)[0], True, 64)['input_ids']
    assert all(row[m.bool()].tolist() in all_tokens
               for row, m in zip(batches.X, batches.mask))
    with pytest.raises(ValueError, match='num_sentences=101'):
        d2lp.subset_batches(Tokenizer(), 101)


def test_predict_returns_the_order_of_the_data():
    from test_library import Tokenizer, sentences
    net = tiny_classifier()
    X_all, y_all = sentences(70)
    dev = d2lp.SentenceBatches(X_all, y_all, Tokenizer(), 16, 20, False)
    y_hat = d2lp.predict(net, dev, device=torch.device('cpu'))
    one_by_one = torch.cat([
        net(*[torch.tensor(t) for t in (x, [1] * len(x))]).argmax(1)
        for x in ([ids] for ids in Tokenizer()(X_all, True, 20)['input_ids'])])
    assert torch.equal(y_hat, one_by_one)
    accuracy = (y_hat == torch.tensor(y_all)).float().mean().item()
    assert accuracy == pytest.approx(
        d2lp.evaluate_accuracy(net, dev, torch.device('cpu')))
