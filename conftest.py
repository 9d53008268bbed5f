"""Every test, and every notebook that nbval runs, uses the reduced mode."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ['D2L_PEFT_SMOKE'] = '1'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
# One thread for torch in each test worker and each notebook's kernel: the
# workers share the cores, and more threads would only fight for them.
os.environ.setdefault('OMP_NUM_THREADS', '1')
# nbval's kernels and these tests import d2l_peft from this checkout.
os.environ['PYTHONPATH'] = os.pathsep.join(
    filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]

import chapter  # noqa: E402

try:
    import nbval.kernel
except ImportError:  # a machine that runs the unit tests only
    pass
else:  # nbval's kernels talk over local sockets: no warnings about TCP;
    # each is forked from a server that imported these modules once.
    nbval.kernel.KernelManager = chapter.local_kernel_manager(
        chapter.PRELOAD)


def assert_full_gpu_run(committed, source, stale):
    """`committed`, a notebook read from disk, is a full run of `source` on
    a GPU: the same cells with the Colab cell first, every cell run, none
    failed, not the reduced mode. `stale` says what to do if it is not."""
    import json
    import chapter
    strip = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert strip(committed) == strip(chapter.notebook(source)), stale
    code = [c for c in committed.cells if c.cell_type == 'code']
    assert code[0].source == chapter.colab_cell()
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs
                if o.output_type == 'error']
    assert chapter.REDUCED_NOTE not in json.dumps(committed)
    assert committed.metadata['d2l_peft']['gpu']
    assert 'on cpu' not in json.dumps(committed)
