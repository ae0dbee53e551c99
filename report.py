"""One self-contained HTML page of a run: curves, the preflight verdict, a completion browser, results.

    python report.py ckpts/RUN                                   # -> ckpts/RUN/report.html
    python report.py ckpts/RUN results/base.json results/trained.json

train.py writes it at the end of every run; this command writes it again, with eval.py's
results beside the run's own figures. What it reads and how: trl_grpo/observe/report.py.
"""

import sys

from trl_grpo.observe.report import main, write_report

__all__ = ["main", "write_report"]

if __name__ == "__main__":
    sys.exit(main())
