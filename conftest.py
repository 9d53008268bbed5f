"""Every test, and every notebook that nbval runs, uses the reduced mode."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ['D2L_PEFT_SMOKE'] = '1'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
# nbval's kernels and these tests import d2l_peft from this checkout.
os.environ['PYTHONPATH'] = os.pathsep.join(
    filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]
