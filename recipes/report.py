"""The study report from any study's output folder (the offline demo or a full-scale GPU run).

    python recipes/report.py --study_dir outputs/demo [--check_browser true]
    python recipes/report.py --corruption_table true     # the registry's corruption table

Writes <study_dir>/report/index.html (figures embedded) and report.md (figures in figures/).
"""

import sys
from pathlib import Path

# Runs from a clone without installation too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vitrobust.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
