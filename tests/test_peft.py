"""The PEFT section (chapter_finetuning_bert/peft.md): adapters saved with
their head and base fingerprint, checked before anything is loaded."""
import os

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertModel

import d2l_peft as d2lp
from test_library import TINY

CONFIG = LoraConfig(r=2, lora_alpha=4, target_modules=['query', 'value'])


def encoder(seed=0):
    torch.manual_seed(seed)
    return BertModel(BertConfig(**TINY), add_pooling_layer=False).eval()


def trained_task(path, num_classes=2, seed=0):
    """A PEFT classifier on encoder(seed) with random LoRA matrices and
    head, saved to `path`; returns the classifier."""
    base = d2lp.encoder_fingerprint(encoder(seed))
    torch.manual_seed(5)
    net = d2lp.BERTClassifier(get_peft_model(encoder(seed), CONFIG),
                              num_classes).eval()
    for name, p in net.named_parameters():
        if 'lora_B' in name:
            torch.nn.init.normal_(p)
    d2lp.save_adapter(net, path, base)
    return net


def test_a_saved_adapter_reloads_with_its_head(tmp_path):
    net = trained_task(tmp_path / 'a', num_classes=3)
    X = torch.randint(3, 50, (4, 7))
    mask = torch.ones_like(X)
    reloaded = d2lp.load_adapter(tmp_path / 'a', encoder(), num_classes=3)
    torch.testing.assert_close(reloaded.eval()(X, mask), net(X, mask))


def test_wrong_base_head_or_file_is_refused_before_loading(tmp_path):
    trained_task(tmp_path / 'a')
    other = encoder(seed=1)
    with pytest.raises(ValueError, match='trained on another base model'):
        d2lp.load_adapter(tmp_path / 'a', other)
    assert not any('lora' in n for n, _ in other.named_parameters())
    with pytest.raises(ValueError, match='head of 2 classes, not 6'):
        d2lp.load_adapter(tmp_path / 'a', encoder(), num_classes=6)
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match='save with save_adapter'):
        d2lp.load_adapter(tmp_path / 'empty', encoder())


def test_multitask_switches_adapters_and_heads_of_any_size(tmp_path):
    nets = {'two': trained_task(tmp_path / 'two', 2),
            'six': trained_task(tmp_path / 'six', 6)}
    server = d2lp.MultiTaskClassifier(encoder()).eval()
    for name in nets:
        server.add_task(name, tmp_path / name)
    X = torch.randint(3, 50, (4, 7))
    mask = torch.ones_like(X)
    for name in ['two', 'six', 'two']:
        server.set_task(name)
        torch.testing.assert_close(server(X, mask), nets[name](X, mask))
    trained_task(tmp_path / 'other', seed=1)
    with pytest.raises(ValueError, match='another base model'):
        server.add_task('other', tmp_path / 'other')
    assert set(server.heads) == {'two', 'six'} and server.task == 'two'
    assert 'other' not in server.encoder.peft_config
