"""Prompt tuning and prefix tuning from scratch
(chapter_finetuning_bert/prompt-tuning.md, prefix-tuning.md): checks and errors."""
import pytest
import torch
from transformers import BertConfig, BertModel
import d2l_peft as d2lp
from test_library import TINY, requires_grad, tiny_classifier

L, d = TINY['num_hidden_layers'], TINY['hidden_size']
CONFIG = {'method': 'prompt tuning', 'num_tokens': 3, 'num_classes': 2}


def padded_batch():
    """Three sentences of 6, 4 and 2 tokens, padded to 6."""
    X = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 9, 10, 2, 0, 0],
                      [1, 2, 0, 0, 0, 0]])
    return X, (X != 0).long()


def one_by_one(net, X, mask):
    return torch.cat([net(X[i:i + 1, :m.sum()], m[None, :m.sum()])
                      for i, m in enumerate(mask)])


def prompt_net(k=3, init_ids=None, seed=0):
    net = tiny_classifier(seed)
    torch.manual_seed(1)
    return d2lp.apply_prompt_tuning(net, k, init_ids).eval()


def prefix_net(k=3, reparam_hiddens=None, seed=0, attention='sdpa'):
    net = tiny_classifier(seed, attn_implementation=attention)
    torch.manual_seed(1)
    return d2lp.apply_prefix_tuning(net, k, reparam_hiddens).eval()


def test_prompt_goes_after_cls_and_counts_match():
    net = prompt_net(k=3)
    X, mask = padded_batch()
    P = net.encoder.prompt
    E = net.encoder.encoder.get_input_embeddings()(X)
    by_hand = torch.cat([E[:, :1], P.expand(3, -1, -1), E[:, 1:]], 1)
    expected = net.encoder.encoder(
        inputs_embeds=by_hand,
        attention_mask=torch.cat([mask[:, :1], torch.ones(3, 3, dtype=int),
                                  mask[:, 1:]], 1)).last_hidden_state
    torch.testing.assert_close(net.encoder(X, mask).last_hidden_state,
                               expected)
    assert d2lp.count_parameters(net)[0] == 3 * d + 2 * d + 2
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {
        'encoder.prompt', 'output.weight', 'output.bias'}


@pytest.mark.parametrize('make', [prompt_net, prefix_net,
                                  lambda: prefix_net(reparam_hiddens=5),
                                  lambda: prefix_net(attention='eager')])
def test_padding_changes_nothing(make):
    net = make()
    X, mask = padded_batch()
    torch.testing.assert_close(net(X, mask), one_by_one(net, X, mask),
                               atol=1e-5, rtol=1e-5)


def test_prompt_starts_at_the_given_words():
    net = prompt_net(k=3, init_ids=[4, 4, 7])
    W = net.encoder.encoder.get_input_embeddings().weight
    assert torch.equal(net.encoder.prompt, W[[4, 4, 7]])
    with pytest.raises(ValueError, match='2 initial token ids for a prompt '
                                         'of length 3'):
        prompt_net(k=3, init_ids=[4, 4])


def test_bad_prompt_lengths():
    max_len = TINY['max_position_embeddings']
    for k in [0, max_len - 1]:
        with pytest.raises(ValueError, match=f'prompt length {k} is '
                                             f'impossible.*<= {max_len - 2}'):
            prompt_net(k)
    net = prompt_net(k=5)
    X = torch.ones(1, max_len - 4, dtype=torch.long)
    with pytest.raises(ValueError, match=f'{max_len - 4} tokens and a prompt '
                                         f'of 5 exceed.*max_len <= '
                                         f'{max_len - 5}'):
        net(X, torch.ones_like(X))
    assert net(X[:, :-1], torch.ones_like(X[:, :-1])).shape == (1, 2)
    with pytest.raises(ValueError, match='prefix length 0 is impossible'):
        prefix_net(k=0)


def test_prefix_uses_no_positions():
    net = prefix_net(k=40)  # longer than the 32 positions of TINY
    X = torch.ones(2, TINY['max_position_embeddings'], dtype=torch.long)
    assert net(X, torch.ones_like(X)).shape == (2, 2)


def test_prefix_counts_match_the_formulas():
    assert d2lp.count_parameters(prefix_net(k=3))[0] == (2 * L * 3 * d
                                                         + 2 * d + 2)
    h = 5
    assert d2lp.count_parameters(prefix_net(k=3, reparam_hiddens=h))[0] == (
        3 * d + (d + 1) * h + (h + 1) * 2 * L * d + 2 * d + 2)


def test_prefix_equals_attention_over_prepended_keys_and_values():
    """A prefix made of the keys and values that some tokens produce gives,
    in the first layer, the attention of the sentence over those tokens
    followed by the sentence."""
    net = prefix_net(k=2)
    bert = net.encoder.encoder
    layer0 = bert.encoder.layer[0].attention.self
    X = torch.tensor([[1, 5, 6, 2]])
    H = bert.embeddings(X)
    Z = torch.randn(1, 2, d)  # two hidden states that the prefix imitates
    K, V = layer0.attention.key(Z)[0], layer0.attention.value(Z)[0]
    layer0.prefix = (K, V)
    ours = layer0(H)[0]
    # The same attention, computed by hand over [Z; H]
    a = layer0.attention
    heads = lambda T: T.view(1, -1, a.num_attention_heads,
                             a.attention_head_size).transpose(1, 2)
    ZH = torch.cat([Z, H], 1)
    scores = heads(a.query(H)) @ heads(a.key(ZH)).transpose(2, 3)
    weights = torch.softmax(scores / a.attention_head_size ** 0.5, -1)
    expected = (weights @ heads(a.value(ZH))).transpose(1, 2).reshape(1, 4,
                                                                      d)
    torch.testing.assert_close(ours, expected)


def test_prefix_equals_peft_with_positions_shifted():
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    net = prefix_net(k=3)
    torch.manual_seed(0)
    peft_net = get_peft_model(
        BertModel(BertConfig(**TINY), add_pooling_layer=False),
        PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION,
                           num_virtual_tokens=3))
    peft_net.base_model.load_state_dict(
        tiny_classifier().encoder.state_dict())
    peft_net.prompt_encoder['default'].embedding.weight.data.copy_(
        net.encoder.prefix)
    ours, X = net.encoder, torch.tensor([[1, 5, 6, 7, 2]])
    for layer, P in zip(ours.encoder.encoder.layer, ours.prefixes()):
        layer.attention.self.prefix = P
    with torch.no_grad():
        shifted = ours.encoder(input_ids=X, position_ids=torch.arange(3, 8)[
            None]).last_hidden_state
        theirs = peft_net.eval()(input_ids=X).last_hidden_state
    torch.testing.assert_close(shifted, theirs)


@pytest.mark.parametrize('make', [prompt_net, prefix_net,
                                  lambda: prefix_net(reparam_hiddens=5)])
def test_training_changes_only_the_prompt_and_head(make):
    net = make().train()
    frozen = {n: p.clone() for n, p in net.named_parameters()
              if not p.requires_grad}
    trainable = {n: p.clone() for n, p in net.named_parameters()
                 if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in net.parameters()
                                 if p.requires_grad], lr=0.1)
    X, mask = padded_batch()
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X, mask),
                                          torch.tensor([0, 1, 1])).backward()
        optimizer.step()
    for n, p in net.named_parameters():
        assert torch.equal(p, frozen[n]) if n in frozen else \
            not torch.equal(p, trainable[n]), n


def test_save_and_load_check_length_and_width(tmp_path):
    net = prompt_net(k=3)
    torch.nn.init.normal_(net.output.weight)
    d2lp.save_trained(net, tmp_path / 'p.pt', CONFIG)
    fresh = prompt_net(k=3, seed=0)
    torch.manual_seed(5)
    torch.nn.init.normal_(fresh.encoder.prompt)
    d2lp.load_trained(fresh, tmp_path / 'p.pt', CONFIG)
    X, mask = padded_batch()
    assert torch.equal(fresh(X, mask), net(X, mask))
    with pytest.raises(ValueError, match="'num_tokens': 3.*'num_tokens': 4"):
        d2lp.load_trained(prompt_net(k=4), tmp_path / 'p.pt',
                          dict(CONFIG, num_tokens=4))
    wider = d2lp.apply_prompt_tuning(tiny_classifier(hidden_size=32), 3)
    with pytest.raises(ValueError, match=r'encoder.prompt of shape \(3, 16\)'
                                         r'.*needs \(3, 32\).*another size'):
        d2lp.load_trained(wider, tmp_path / 'p.pt', CONFIG)
    with pytest.raises(ValueError, match='another base model'):
        d2lp.load_trained(prompt_net(k=3, seed=1), tmp_path / 'p.pt', CONFIG)


@pytest.mark.parametrize('make', [prompt_net, prefix_net])
def test_applying_twice_is_refused(make):
    net = make()
    before = requires_grad(net)
    encoder = net.encoder
    for apply in [lambda: d2lp.apply_prompt_tuning(net, 3),
                  lambda: d2lp.apply_prefix_tuning(net, 3)]:
        with pytest.raises(ValueError, match='already'):
            apply()
    assert net.encoder is encoder
    assert requires_grad(net) == before


@pytest.mark.parametrize('apply,error', [
    (lambda net: d2lp.apply_prompt_tuning(net, 3, init_ids=[1, 2, 50]),
     'initial token ids must be 0 to 49'),
    (lambda net: d2lp.apply_prompt_tuning(net, 0), 'prompt length 0'),
    (lambda net: d2lp.apply_prefix_tuning(net, 0), 'prefix length 0'),
    (lambda net: d2lp.apply_prefix_tuning(net, 3, reparam_hiddens=0),
     'reparam_hiddens=0'),
    (lambda net: d2lp.apply_prefix_tuning(net, 3, trainable=('head',)),
     "no module named \\['head'\\]")])
def test_bad_arguments_leave_the_model_untouched(apply, error):
    net = tiny_classifier()
    attention = [layer.attention.self for layer in net.encoder.encoder.layer]
    with pytest.raises(ValueError, match=error):
        apply(net)
    assert all(p.requires_grad for p in net.parameters())
    assert [layer.attention.self for layer in
            net.encoder.encoder.layer] == attention
    assert not hasattr(net, 'method')
