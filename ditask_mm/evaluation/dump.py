"""``tools/test.py --out``: every prediction in a pickle file, written atomically."""
import pickle

from mmengine.evaluator import DumpResults
from mmengine.logging import print_log

from ..fileio import atomic_write_bytes
from ..registry import METRICS


@METRICS.register_module()
class AtomicDumpResults(DumpResults):
    """mmengine's ``DumpResults``, writing the pickle to a temporary file and renaming it.

    mmengine's version writes the final file in place, so a full disk or a
    killed job leaves a truncated pickle where a previous complete one may
    have been. Same arguments as ``DumpResults``.
    """

    def compute_metrics(self, results: list) -> dict:
        atomic_write_bytes(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL), self.out_file_path)
        print_log(f'predictions of {len(results)} images saved to {self.out_file_path}', logger='current')
        return {}
