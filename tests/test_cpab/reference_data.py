"""Where the difw-computed CPAB reference vectors live, and how the tests open them.

The ``.npz`` files ship with the repository in ``tests/data/cpab_reference/``
(its README says what they hold and how they were produced). A missing file is
an error, never a skip: without the vectors the CPAB tests would check nothing
against difw.
"""
from pathlib import Path
from typing import List

import numpy as np

REF_DIR = Path(__file__).resolve().parents[1] / 'data' / 'cpab_reference'
#: (tessellation size, zero boundary) of every stored configuration.
CONFIGS = [(nc, zb) for nc in (2, 5, 16, 32) for zb in (True, False)]


def config_file_name(nc: int, zb: bool) -> str:
    """File name of one configuration's vectors, e.g. ``cpab_nc05_zb1.npz``."""
    return f'cpab_nc{nc:02d}_zb{int(zb)}.npz'


def expected_files() -> List[str]:
    """Every file the CPAB tests read from :data:`REF_DIR`."""
    return sorted([config_file_name(nc, zb) for nc, zb in CONFIGS] + ['signal_and_weights.npz', 'tiny_example.npz'])


def load_reference(name: str):
    """Open ``REF_DIR / name`` with ``np.load``.

    Raises:
        FileNotFoundError: If the file is missing, naming the path and how to
            get the file back.
    """
    path = REF_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f'CPAB reference vectors {path} not found: the tests need every file of '
                                f'{expected_files()} in {REF_DIR} (they are tracked in git; restore them with '
                                f'`git checkout -- tests/data/cpab_reference`)')
    return np.load(path)


def load_config(nc: int, zb: bool):
    """The stored vectors of one (tessellation size, zero boundary) configuration."""
    return load_reference(config_file_name(nc, zb))
