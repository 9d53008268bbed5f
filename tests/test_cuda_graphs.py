"""CUDA graphs replay the same training steps as eager execution (GPU only:
skipped on a machine without one)."""
import functools
import math

import pytest
import torch
from torch import nn

import d2l_peft as d2lp
from test_library import Tokenizer, sentences, small_run, tiny_classifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='CUDA graphs need a GPU')


def without_dropout(net):
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(net.encoder, 'config', None)
    if config is not None:
        config.attention_probs_dropout_prob = 0.0
    return net


def trained(make_net, graphs, num_passes=3):
    """Parameters after a few passes over minibatches of two shapes."""
    device = torch.device('cuda')
    net = without_dropout(make_net()).to(device).train()
    optimizer = d2lp.adamw(net, 1e-2, 0.01, device)
    step = functools.partial(d2lp.train_batch, net,
                             loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                             scaler=d2lp.grad_scaler(device))
    step = d2lp.CUDAGraphs(step) if graphs else step
    data = d2lp.SentenceBatches(*sentences(96), Tokenizer(), 32, 16,
                                shuffle=False).to(device)
    losses = []
    for _ in range(num_passes):
        for X, mask, y in data:
            losses.append(step(X, mask, y)[0].item())
    return losses, [p.detach().cpu() for p in net.parameters()]


def peft_config(method):
    from peft import IA3Config, LoraConfig
    # PEFT's prompt and prefix tuning copy from the CPU in every forward
    # pass, which cannot be recorded: they train with cuda_graphs=False.
    return {'peft lora': LoraConfig(r=4, lora_alpha=8,
                                    target_modules=['query', 'value']),
            'peft ia3': IA3Config(
                target_modules=r'.*\.(key|value)|' + d2lp.FEED_FORWARD,
                feedforward_modules=d2lp.FEED_FORWARD)}[method]


@pytest.mark.parametrize('method', ['full', 'lora', 'adapters', 'prompt',
                                    'prefix', 'qlora', 'peft lora',
                                    'peft ia3'])
def test_replayed_steps_train_as_eager_steps_do(method):
    def make_net():
        net = tiny_classifier().train()
        if method.startswith('peft'):
            from peft import get_peft_model
            torch.manual_seed(2)
            net = d2lp.BERTClassifier(
                get_peft_model(net.encoder, peft_config(method)), 2)
        elif method == 'qlora':
            d2lp.quantize_linear_layers(net, block_size=16)
            d2lp.apply_lora(net, 4, 8, d2lp.ALL_LINEAR)
        elif method == 'lora':
            d2lp.apply_lora(net, 4, 8)
        elif method == 'adapters':
            d2lp.apply_adapters(net, 4)
        elif method == 'prompt':
            d2lp.apply_prompt_tuning(net, 3)
        elif method == 'prefix':
            d2lp.apply_prefix_tuning(net, 3)
        return net
    eager_losses, eager = trained(make_net, graphs=False)
    graph_losses, graphed = trained(make_net, graphs=True)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-5)
    assert eager_losses[-1] < eager_losses[0]
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def gpu_run():
    """Arguments of a tiny training run of three epochs on the GPU."""
    return small_run(num_epochs=3, lr=1e-2, device=torch.device('cuda'))


def test_train_classifier_replays_graphs_on_a_gpu(monkeypatch):
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    recorded = []
    record = d2lp.CUDAGraphs.record
    monkeypatch.setattr(d2lp.CUDAGraphs, 'record',
                        lambda self, *args: recorded.append(args[0])
                        or record(self, *args))
    result = d2lp.train_classifier(**gpu_run())
    assert result['peak_memory'] > 0 and recorded
    assert len(recorded) == len(set(recorded))  # one graph per shape


def test_float16_trains_step_by_step_with_a_gradient_scaler(monkeypatch):
    """What a T4 or V100 runs (capability 7.x): float16 autocast, the
    scaler on and no graphs."""
    monkeypatch.setenv('D2L_PEFT_SMOKE', '0')
    monkeypatch.setattr(torch.cuda, 'get_device_capability',
                        lambda device=None: (7, 5))
    assert d2lp.mixed_precision(torch.device('cuda')) == torch.float16
    assert d2lp.grad_scaler(torch.device('cuda')).is_enabled()
    def record(*args):
        raise AssertionError('a step with a gradient scaler was recorded')
    monkeypatch.setattr(d2lp.CUDAGraphs, 'record', record)
    result = d2lp.train_classifier(**gpu_run())
    assert math.isfinite(result['loss']) and result['peak_memory'] > 0
