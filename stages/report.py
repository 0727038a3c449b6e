"""dvc stage: report (recpipe/steps/report.py)."""

from recpipe.steps import report, stage

if __name__ == "__main__":
    stage.main(report)
