"""Adapters from scratch (chapter_finetuning_bert/adapters.md)."""
import pytest
import torch
import d2l_peft as d2lp
from test_library import TINY, inputs, requires_grad, tiny_classifier as tiny


def adapters(net):
    return [m for m in net.modules() if isinstance(m, d2lp.Adapter)]


@pytest.mark.parametrize('placement,per_layer', [('houlsby', 2),
                                                 ('feed-forward', 1)])
def test_starts_as_the_pretrained_function(placement, per_layer):
    net = tiny()
    X, mask = inputs()
    before = net(X, mask)
    d2lp.apply_adapters(net, bottleneck=3, placement=placement)
    assert torch.equal(net(X, mask), before)
    L, d = TINY['num_hidden_layers'], TINY['hidden_size']
    assert len(adapters(net)) == per_layer * L
    trainable, _ = d2lp.count_parameters(net)
    layer_norms = (2 * L + 1) * 2 * d
    assert trainable == (per_layer * L * (2 * 3 * d + 3 + d) + layer_norms
                         + 2 * d + 2)


def test_adapter_is_residual_and_learns():
    torch.manual_seed(0)
    adapter = d2lp.Adapter(8, 2)
    H = torch.randn(4, 8)
    assert torch.equal(adapter(H), H)
    adapter(H).pow(2).sum().backward()
    assert adapter.up.weight.grad.abs().sum() > 0
    assert adapter.down.weight.grad.abs().sum() == 0  # up is still zero
    torch.nn.init.normal_(adapter.up.weight)
    expected = H + torch.relu(H @ adapter.down.weight.T
                              + adapter.down.bias) @ adapter.up.weight.T
    torch.testing.assert_close(adapter(H), expected + adapter.up.bias)


def test_only_adapters_layernorms_and_head_train():
    net = d2lp.apply_adapters(tiny(), bottleneck=3)
    for name, p in net.named_parameters():
        expected = ('.down.' in name or '.up.' in name
                    or 'LayerNorm' in name or name.startswith('output.'))
        assert p.requires_grad == expected, name


def test_bad_bottleneck_and_placement():
    with pytest.raises(ValueError, match='bottleneck size 0'):
        d2lp.Adapter(8, 0)
    with pytest.raises(ValueError, match="unknown placement 'pfeiffer'.*"
                                         "'feed-forward', 'houlsby'"):
        d2lp.apply_adapters(tiny(), 3, placement='pfeiffer')


def test_save_and_load_check_base_and_size(tmp_path):
    config = {'method': 'adapters', 'placement': 'houlsby', 'bottleneck': 3}
    net = d2lp.apply_adapters(tiny(), 3)
    for a in adapters(net):
        torch.nn.init.normal_(a.up.weight)
    d2lp.save_trained(net, tmp_path / 'a.pt', config)
    fresh = d2lp.apply_adapters(tiny(), 3)
    d2lp.load_trained(fresh, tmp_path / 'a.pt', config)
    X, mask = inputs()
    assert torch.equal(fresh(X, mask), net(X, mask))
    with pytest.raises(ValueError, match='another base model'):
        d2lp.load_trained(d2lp.apply_adapters(tiny(seed=1), 3),
                          tmp_path / 'a.pt', config)
    with pytest.raises(ValueError, match="'bottleneck': 3.*'bottleneck': 4"):
        d2lp.load_trained(d2lp.apply_adapters(tiny(), 4), tmp_path / 'a.pt',
                          dict(config, bottleneck=4))


def test_impossible_bottleneck_leaves_the_model_untouched():
    with pytest.raises(ValueError, match='bottleneck size 17 is impossible'
                                         '.*1 <= m <= 16'):
        d2lp.Adapter(16, 17)
    net = tiny()
    with pytest.raises(ValueError, match='bottleneck size 17'):
        d2lp.apply_adapters(net, 17)
    assert all(p.requires_grad for p in net.parameters())
    assert not adapters(net) and not hasattr(net, 'method')


def test_applying_twice_is_refused():
    net = d2lp.apply_adapters(tiny(), 3)
    before = requires_grad(net)
    for apply in [lambda: d2lp.apply_adapters(net, 3, 'feed-forward'),
                  lambda: d2lp.apply_lora(net, 2, 4)]:
        with pytest.raises(ValueError, match='prepared for adapters '
                                             r'\(houlsby\) already'):
            apply()
    assert requires_grad(net) == before
    assert len(adapters(net)) == 2 * TINY['num_hidden_layers']
