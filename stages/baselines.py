"""dvc stage: baselines (recpipe/steps/baselines.py)."""

from recpipe.steps import baselines, stage

if __name__ == "__main__":
    stage.main(baselines)
