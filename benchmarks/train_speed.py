"""Training speed: the chapter's train_classifier against a plain loop.

    python benchmarks/train_speed.py [--out benchmarks/results.md]

On a GPU, one epoch of SST-2 (batch 64, sentences of at most 64 tokens)
with full fine-tuning and with LoRA r=8 on query and value, each trained
once by `d2lp.train_classifier` and once by the plain loop below, in one
process, on the same model and data. The plain loop is what a first
version looks like: it tokenizes each minibatch when it needs it, pads it
to its longest sentence and copies it to the GPU, uses PyTorch's default
AdamW and the same autocast and schedule. Writes a Markdown table with the
GPU's name; `python tools/chapter.py readme` copies it into the README.
"""
import argparse
import contextlib
import datetime
import io
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import d2l_peft as d2lp  # noqa: E402

BATCH_SIZE, MAX_LEN = 64, 64


def plain_epoch(net, sentences, labels, tokenizer, lr, device):
    """Seconds of one epoch of a plain training loop."""
    net.to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=lr,
        weight_decay=0.01)
    num_steps = math.ceil(len(labels) / BATCH_SIZE)
    num_warmup = int(0.1 * num_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (
        (step + 1) / (num_warmup + 1) if step < num_warmup
        else (num_steps - step) / (num_steps - num_warmup)))
    order = torch.randperm(len(labels)).tolist()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(order), BATCH_SIZE):
        batch = order[i:i + BATCH_SIZE]
        tokens = tokenizer([sentences[j] for j in batch], truncation=True,
                           max_length=MAX_LEN, padding=True,
                           return_tensors='pt').to(device)
        y = torch.tensor([labels[j] for j in batch], device=device)
        with d2lp.autocast(device):
            y_hat = net(tokens['input_ids'], tokens['attention_mask'])
        loss = nn.functional.cross_entropy(y_hat.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def chapter_epoch(net, train_iter, dev_iter, lr):
    """Seconds of one epoch of d2lp.train_classifier (its own timing of the
    training steps) and of the whole call (with evaluation and plot)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        result = d2lp.train_classifier(net, train_iter, dev_iter, 1, lr)
    print('  train_classifier:', next(line for line in printed.getvalue()
                                      .splitlines() if 'examples/sec' in line))
    return result['sec_per_epoch'], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=str(ROOT / 'benchmarks' /
                                             'results.md'))
    args = parser.parse_args()
    if not torch.cuda.is_available() or d2lp.reduced_mode():
        sys.exit('the benchmark needs a GPU and the full data '
                 '(D2L_PEFT_SMOKE unset)')
    device = torch.device('cuda')
    tokenizer, _ = d2lp.load_bert()
    sentences, labels = d2lp.load_sst2('train')
    train_iter, dev_iter = d2lp.load_data_sst2(tokenizer, BATCH_SIZE,
                                               MAX_LEN)
    rows = []
    for name, classifier, lr in [
            ('full fine-tuning', d2lp.pretrained_classifier, 5e-5),
            ('LoRA r=8 on query, value',
             lambda: d2lp.lora_classifier(8, alpha=16), 1e-3)]:
        print(name, flush=True)
        plain = plain_epoch(classifier(), sentences, labels, tokenizer, lr,
                            device)
        print(f'  plain loop: {plain:.1f} s', flush=True)
        ours, call = chapter_epoch(classifier(), train_iter, dev_iter, lr)
        n = len(labels)
        rows.append(f'| {name} | {n / plain:,.0f} | {n / ours:,.0f} '
                    f'({call:.1f} s with evaluation and plot) | '
                    f'{plain / ours:.1f}x |')
    text = '\n'.join([
        f'Measured on an {torch.cuda.get_device_name()} with torch '
        f'{torch.__version__} on {datetime.date.today()} by '
        '`benchmarks/train_speed.py`: one epoch of SST-2 (67,349 sentences, '
        'batch 64, at most 64 tokens), in one process.',
        '',
        '| training run | plain loop, examples/sec | `train_classifier`, '
        'examples/sec | speed-up |',
        '| --- | ---: | ---: | ---: |', *rows, ''])
    Path(args.out).write_text(text)
    print(text)


if __name__ == '__main__':
    main()
