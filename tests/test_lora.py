"""LoRA from scratch (chapter_finetuning_bert/lora.md): checks and errors."""
import pytest
import torch
from torch import nn
import d2l_peft as d2lp
from test_library import TINY, inputs, tiny_classifier

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


def test_merged_model_cannot_be_saved(tmp_path):
    net = lora_net()
    for m in net.modules():
        if isinstance(m, d2lp.LoRALinear):
            m.merge()
    with pytest.raises(RuntimeError, match='unmerge before saving'):
        d2lp.save_trained(net, tmp_path / 'a.pt', CONFIG)


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
    batches = d2lp.subset_batches(Tokenizer(), 30, seed=3)
    again = d2lp.subset_batches(Tokenizer(), 30, seed=3)
    assert sorted(batches.tokens) == sorted(again.tokens)
    assert len(batches.tokens) == 30 and len(batches) == 1
    all_tokens = Tokenizer()(sentences(100)[0], True, 64)['input_ids']
    assert all(t in all_tokens for t in batches.tokens)
    net = tiny_classifier()
    dev = d2lp.SentenceBatches(*sentences(70), Tokenizer(), 16, 20, False)
    y_hat = d2lp.predict(net, dev, device=torch.device('cpu'))
    expected = torch.cat([net(X, mask).argmax(1) for X, mask, _ in dev])
    assert torch.equal(y_hat, expected) and len(y_hat) == 70
