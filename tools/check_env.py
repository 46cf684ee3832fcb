#!/usr/bin/env python
"""Print what ditask_mm runs on: versions, compat patches, devices, a CPAB self-check.

Exit status 1 if a required import fails or the CPAB self-check is off.

Example::

    python tools/check_env.py
"""
import importlib
import platform
import sys


def version_of(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), '__version__', 'installed')
    except Exception as err:  # report, do not crash: this is a diagnostic tool
        return f'MISSING ({type(err).__name__}: {err})'


def main() -> int:
    import torch

    import ditask_mm
    from ditask_mm.compat import mmcv_ops
    from ditask_mm.cpab import CPAB1D

    rows = [('python', platform.python_version()), ('torch', torch.__version__),
            ('cuda available', str(torch.cuda.is_available())), ('ditask_mm', ditask_mm.__version__)]
    for name in ('mmengine', 'mmcv', 'mmseg', 'mmpretrain', 'timm', 'numpy', 'scipy'):
        rows.append((name, version_of(name)))
    rows.append(('compiled mmcv ops', str(mmcv_ops.compiled_mmcv_available())))
    rows += [(f'compat.{k}', str(v)) for k, v in ditask_mm.COMPAT_STATUS.items()]
    ok = all('MISSING' not in v for k, v in rows if k in ('mmengine', 'mmcv', 'mmseg'))
    try:
        import mmseg.models  # noqa: F401
        rows.append(('import mmseg.models', 'ok'))
    except Exception as err:
        rows.append(('import mmseg.models', f'FAILED: {err}'))
        ok = False
    # docs/method.md §3.7 worked example: nc=4, θ=[0.8,−0.5,0.3]
    cpab = CPAB1D(4).double()
    out = cpab.transform_sequence(torch.arange(8, 0, -1, dtype=torch.float64),
                                  torch.tensor([0.8, -0.5, 0.3], dtype=torch.float64))
    expected = torch.tensor([8, 6.10183, 5.419018, 5.032277, 4.308294, 2.533958, 1.740818, 1],
                            dtype=torch.float64)
    err = (out - expected).abs().max().item()
    rows.append(('CPAB self-check (max error)', f'{err:.1e} ' + ('ok' if err < 1e-5 else 'WRONG')))
    ok = ok and err < 1e-5
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f'{key:<{width}}  {value}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
