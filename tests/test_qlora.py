"""QLoRA from scratch (chapter_finetuning_bert/qlora.md): NF4 against
bitsandbytes, the 4-bit layer, and clear errors."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import d2l_peft as d2lp
from test_library import tiny_classifier

bnbF = pytest.importorskip('bitsandbytes.functional')


def test_nf4_levels_are_bitsandbytes_table():
    levels = d2lp.nf4_levels()
    assert levels.shape == (16,) and torch.equal(levels, levels.sort().values)
    assert levels[0] == -1 and levels[-1] == 1 and (levels == 0).any()
    torch.testing.assert_close(levels, bnbF.get_4bit_type('nf4', 'cpu'),
                               atol=1e-6, rtol=0)


def test_codes_and_weights_match_bitsandbytes():
    torch.manual_seed(0)
    linear = nn.Linear(128, 32)
    layer = d2lp.NF4Linear(linear, double_quant=False)
    packed, state = bnbF.quantize_4bit(linear.weight.detach().contiguous(),
                                       blocksize=64, quant_type='nf4')
    assert torch.equal(packed.flatten(), layer.packed)
    torch.testing.assert_close(layer.dequantize(),
                               bnbF.dequantize_4bit(packed, state))
    X = torch.randn(5, 128)
    torch.testing.assert_close(layer(X), F.linear(X, layer.dequantize(),
                                                  linear.bias))


def test_double_quantization_stores_fewer_bits_and_stays_close():
    torch.manual_seed(0)
    linear = nn.Linear(64, 8 * 3)  # 24 blocks: not a multiple of 256
    single = d2lp.NF4Linear(linear, double_quant=False)
    double = d2lp.NF4Linear(linear, double_quant=True)
    assert d2lp.stored_bits(single) == 4.5
    big = d2lp.NF4Linear(nn.Linear(256, 256))  # 1,024 blocks
    assert d2lp.stored_bits(big) == pytest.approx(
        4 + 8 / 64 + (32 / 64 / 256) + 32 / 256 ** 2, abs=1e-6)
    absmax = single.absmaxes()
    assert (double.absmaxes() - absmax).abs().max() <= absmax.max() / 127
    assert double.absmaxes().shape == absmax.shape


def test_bad_weights_are_refused_before_any_change():
    with pytest.raises(ValueError, match='only 2-D'):
        d2lp.quantize_blocks(torch.randn(4, 4, 4), d2lp.nf4_levels())
    with pytest.raises(ValueError, match='does not split into blocks of 64'):
        d2lp.quantize_blocks(torch.randn(10, 10), d2lp.nf4_levels())
    net = tiny_classifier()
    net.encoder.encoder.layer[1].output.dense = nn.Linear(30, 16)
    before = {n: type(m) for n, m in net.named_modules()}
    with pytest.raises(ValueError, match='does not split'):
        d2lp.quantize_linear_layers(net, block_size=64)
    assert before == {n: type(m) for n, m in net.named_modules()}


def qlora_net(quantized=True):
    net = tiny_classifier()
    if quantized:
        d2lp.quantize_linear_layers(net, block_size=16)
    d2lp.apply_lora(net, 2, 4, d2lp.ALL_LINEAR)
    for name, p in net.named_parameters():
        if name.endswith('.B'):
            nn.init.normal_(p)
    return net


def test_lora_wraps_nf4_and_refuses_to_merge_into_it():
    net = qlora_net()
    assert d2lp.base_format(net) == 'nf4'
    assert all(isinstance(m.linear, d2lp.NF4Linear) for m in net.modules()
               if isinstance(m, d2lp.LoRALinear))
    X = torch.randint(3, 50, (2, 6))
    y = net(X, torch.ones_like(X))
    with pytest.raises(RuntimeError, match='stores its weight in 4 bits'):
        d2lp.merge_lora(net)
    assert not any(getattr(m, 'merged', False) for m in net.modules())
    torch.testing.assert_close(net(X, torch.ones_like(X)), y)


@pytest.mark.parametrize('saved_quantized', [True, False])
def test_adapter_of_one_base_format_is_refused_on_the_other(
        tmp_path, saved_quantized):
    config = {'method': 'qlora', 'r': 2}
    path = tmp_path / 'adapter.pt'
    d2lp.save_qlora(qlora_net(saved_quantized), path, config)
    d2lp.load_qlora(qlora_net(saved_quantized), path, config)
    other = qlora_net(not saved_quantized)
    state = {n: p.clone() for n, p in other.named_parameters()}
    with pytest.raises(ValueError, match="'base': '(nf4|float)'"):
        d2lp.load_qlora(other, path, config)
    assert all(torch.equal(p, state[n]) for n, p in other.named_parameters())
