"""Execute sections and solutions on all GPUs of a machine at once.

    python tools/gpus.py --into OUT [--deadline S] [--gpus 0,1] NAME.. solutions/NAME..

Each GPU executes one notebook at a time with `chapter.py execute`, the
longest first (as long as the committed notebook's run took, else
DEFAULT_SECONDS), and a notebook that would not finish before the deadline
(seconds from now) is not started: commands on the lent GPU machines stop
after 10 minutes. Sections go to OUT/notebooks, solutions to
OUT/solutions, each run's output to OUT/logs. `--capability 7.5` executes
them all on a T4's path.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECONDS = 300  # for a notebook never executed on a GPU


def expected_seconds(job):
    """How long the committed run of `job` ('name' or 'solutions/name')
    took on a GPU, else DEFAULT_SECONDS."""
    solution, name = split(job)
    folder = ROOT / ('solutions/notebooks' if solution else 'notebooks')
    try:
        nb = json.loads((folder / f'{name}.ipynb').read_text())
        return nb['metadata']['d2l_peft']['seconds'] or DEFAULT_SECONDS
    except (OSError, KeyError, TypeError, ValueError):
        return DEFAULT_SECONDS


def split(job):
    """(is a solution, section name) of a job."""
    solution = job.startswith('solutions/')
    return solution, job[len('solutions/'):] if solution else job


def schedule(jobs, gpus, deadline, run, expected=expected_seconds,
             clock=time.monotonic):
    """Call `run(job, gpu)` for every job, one at a time on each of
    `gpus`, longest expected first; a job that would end after `deadline`
    seconds is skipped. Returns {job: what run returned, or 'skipped'}."""
    start, lock, results = clock(), threading.Lock(), {}
    waiting = sorted(jobs, key=expected, reverse=True)

    def worker(gpu):
        while True:
            with lock:
                left = deadline - (clock() - start)
                job = next((j for j in waiting if expected(j) <= left), None)
                if job is None:
                    return
                waiting.remove(job)
            results[job] = run(job, gpu)

    threads = [threading.Thread(target=worker, args=(gpu,)) for gpu in gpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {job: results.get(job, 'skipped') for job in jobs}


def execute_on(into, capability):
    """`run` for `schedule`: execute a job with chapter.py on one GPU."""
    def run(job, gpu):
        solution, name = split(job)
        command = [sys.executable, str(ROOT / 'tools' / 'chapter.py'),
                   'execute', name, '--into',
                   str(into / ('solutions' if solution else 'notebooks'))]
        command += ['--solutions'] if solution else []
        command += ['--capability', capability] if capability else []
        log = into / 'logs' / f'{job.replace("/", "-")}.txt'
        start = time.monotonic()
        with open(log, 'w') as f:
            code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT,
                                   env={**os.environ,
                                        'CUDA_VISIBLE_DEVICES': str(gpu)})
        seconds = round(time.monotonic() - start)
        print(f'{job} on GPU {gpu}: {"done" if code == 0 else "FAILED"} '
              f'in {seconds} s', flush=True)
        return 'done' if code == 0 else 'failed'
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('jobs', nargs='+',
                        help='sections, and solutions as solutions/NAME')
    parser.add_argument('--into', required=True)
    parser.add_argument('--deadline', type=float, default=540,
                        help='seconds from now (default 540)')
    parser.add_argument('--gpus', help='GPU indices, such as 0,1 '
                        '(default: all)')
    parser.add_argument('--capability', help='as chapter.py execute')
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / 'tools'))
    import chapter
    for of_solutions in (False, True):  # exits on an unknown name
        names = [name for solution, name in map(split, args.jobs)
                 if solution == of_solutions]
        if names:
            chapter.chosen_sections(names, of_solutions)
    chapter.write_library()  # once here, not by every run at once
    if args.gpus:
        gpus = [int(gpu) for gpu in args.gpus.split(',')]
    else:
        import torch
        gpus = list(range(torch.cuda.device_count()))
    if not gpus:
        sys.exit('no GPU here: use chapter.py execute for the reduced mode')
    into = Path(args.into).resolve()
    (into / 'logs').mkdir(parents=True, exist_ok=True)
    results = schedule(args.jobs, gpus, args.deadline,
                       execute_on(into, args.capability))
    for job, result in results.items():
        print(f'{job:<32}{result}')
    sys.exit(0 if all(r == 'done' for r in results.values()) else 1)


if __name__ == '__main__':
    main()
