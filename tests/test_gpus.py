"""tools/gpus.py shares notebooks among GPUs: longest first, one at a
time on each, none started that would end after the deadline."""
import threading

import gpus


def fake_schedule(durations, num_gpus, deadline):
    """`schedule` on fake jobs that take `durations` seconds of a simulated
    clock, one clock per GPU: (results, [(job, gpu, start)])."""
    clocks = {gpu: 0.0 for gpu in range(num_gpus)}
    current, log = threading.local(), []

    def run(job, gpu):
        current.gpu = gpu
        log.append((job, gpu, clocks[gpu]))
        clocks[gpu] += durations[job]
        return 'done'

    def clock():  # each worker reads its own GPU's time; the caller 0
        gpu = getattr(current, 'gpu', None)
        return 0.0 if gpu is None else clocks[gpu]

    results = gpus.schedule(list(durations), range(num_gpus), deadline,
                            run, expected=durations.get, clock=clock)
    return results, log


def test_longest_first_and_none_past_the_deadline():
    durations = {'a': 500, 'b': 300, 'c': 250, 'd': 100, 'e': 60, 'f': 400}
    results, log = fake_schedule(durations, 2, 540)
    assert {job for job, _, start in log if start == 0} == {'a', 'f'}
    # after f (400 s), d (100 s) is the longest that still fits; after a
    # (500 s), nothing does
    assert results == {'a': 'done', 'b': 'skipped', 'c': 'skipped',
                       'd': 'done', 'e': 'skipped', 'f': 'done'}
    assert all(start + durations[job] <= 540 for job, _, start in log)
    assert len({job for job, _, _ in log}) == len(log)  # none twice


def test_every_job_runs_when_the_gpus_suffice():
    durations = {name: 100 for name in 'abcdefgh'}
    results, log = fake_schedule(durations, 2, 540)
    assert set(results.values()) == {'done'}
    assert all(start + 100 <= 540 for _, _, start in log)


def test_a_job_longer_than_the_deadline_never_starts():
    results, _ = fake_schedule({'long': 700, 'short': 10}, 4, 540)
    assert results == {'long': 'skipped', 'short': 'done'}


def test_jobs_name_sections_and_solutions():
    assert gpus.split('lora') == (False, 'lora')
    assert gpus.split('solutions/lora') == (True, 'lora')
    assert gpus.expected_seconds('no-such-section') == gpus.DEFAULT_SECONDS
    assert gpus.expected_seconds('solutions/qlora') > 0
