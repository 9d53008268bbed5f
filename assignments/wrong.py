"""Plausibly wrong solutions, and the parts (test cells) each one breaks.

Each is made from the reference solution (the source notebook) by
replacing text in its solution cells; `make assignments` autogrades it and
checks that it loses the points of exactly the parts listed in `breaks`.
A replacement whose text is no longer there (because the chapter's code
changed) is an error: update it here.
"""

WRONG = [
    dict(assignment='lora', name='no-scaling',
         why='forgets the alpha / r scale (uses 1)',
         replace=[('self.scale = r, alpha, alpha / r',
                   'self.scale = r, alpha, 1')],
         breaks=['lora-layer']),
    dict(assignment='lora', name='merge-flag',
         why='merge adds the update but does not set merged, so forward '
             'adds it twice',
         replace=[('self.linear.weight.data += self.delta()\n'
                   '        self.merged = True',
                   'self.linear.weight.data += self.delta()')],
         breaks=['lora-merge']),
    dict(assignment='adapters', name='no-residual',
         why='the adapter forgets the residual connection',
         replace=[('return H + self.up(torch.relu(self.down(H)))',
                   'return self.up(torch.relu(self.down(H)))')],
         breaks=['adapter-module']),
    dict(assignment='adapters', name='frozen-layer-norms',
         why='apply_adapters leaves the layer normalizations frozen',
         replace=[('list(trainable) + layer_norms', 'list(trainable)')],
         breaks=['adapter-insert']),
    dict(assignment='nf4', name='per-tensor-absmax',
         why='one absmax for the whole tensor instead of one per block',
         replace=[('absmax = blocks.abs().amax(dim=1)',
                   'absmax = blocks.abs().amax().expand(len(blocks))')],
         breaks=['nf4-quantize']),
    dict(assignment='nf4', name='uniform-levels',
         why='16 evenly spaced levels instead of normal quantiles',
         replace=[('return (levels / levels.max()).float()',
                   'return torch.linspace(-1, 1, 16)')],
         breaks=['nf4-levels']),
    dict(assignment='bitfit', name='layer-norms-too',
         why='also trains the LayerNorm weights',
         replace=[("if name.endswith('bias'):",
                   "if name.endswith('bias') or 'LayerNorm' in name:")],
         breaks=['bitfit-apply']),
    dict(assignment='save-load', name='no-base-check',
         why='load_trained does not compare the base model',
         replace=[("differ = base_differences(saved['base'], "
                   "frozen_fingerprint(net))", 'differ = []')],
         breaks=['save-base']),
    dict(assignment='prompt-tuning', name='prompt-first',
         why='puts the prompt before [CLS], where the classifier reads',
         replace=[('E = torch.cat([E[:, :1], self.prompt.expand(b, -1, -1), '
                   'E[:, 1:]], 1)',
                   'E = torch.cat([self.prompt.expand(b, -1, -1), E], 1)'),
                  ('mask = torch.cat([attention_mask[:, :1], '
                   'attention_mask.new_ones(b, k),\n'
                   '                          attention_mask[:, 1:]], 1)',
                   'mask = torch.cat([attention_mask.new_ones(b, k), '
                   'attention_mask], 1)')],
         breaks=['prompt-forward']),
]
