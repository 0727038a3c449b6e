"""dvc stage: p5_report (recpipe/steps/p5_report.py)."""

from recpipe.steps import p5_report, stage

if __name__ == "__main__":
    stage.main(p5_report)
