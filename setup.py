"""Installer for ditask_mm (DiTASK for the OpenMMLab stack)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def read_requirements(name: str) -> list:
    """Return the requirement lines of requirements/<name>.txt."""
    lines = (ROOT / 'requirements' / f'{name}.txt').read_text().splitlines()
    reqs = []
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if line:
            reqs.append(line)
    return reqs


def read_version() -> str:
    text = (ROOT / 'ditask_mm' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


def runtime_requirements() -> list:
    """Runtime requirements; mmcv-lite satisfies the mmcv range too."""
    reqs = read_requirements('runtime')
    # pip cannot express "mmcv or mmcv-lite"; ask for mmcv-lite only when no
    # mmcv distribution is installed, so a full mmcv build is used untouched.
    try:
        from importlib.metadata import version
        version('mmcv')
    except Exception:  # PackageNotFoundError or an old importlib
        reqs = [r.replace('mmcv>=', 'mmcv-lite>=') if r.startswith('mmcv>=') else r for r in reqs]
    return reqs


setup(
    name='ditask_mm',
    version=read_version(),
    description='DiTASK: diffeomorphic multi-task fine-tuning for mmsegmentation',
    long_description=(ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=('ditask_mm', 'ditask_mm.*')),
    python_requires='>=3.9',
    install_requires=runtime_requirements(),
    extras_require={
        'tests': read_requirements('tests'),
        'optional': read_requirements('optional'),
    },
    license='Apache-2.0',
    zip_safe=False,
)
