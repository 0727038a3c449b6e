"""dvc stage: sample (recpipe/steps/sample.py)."""

from recpipe.steps import sample, stage

if __name__ == "__main__":
    stage.main(sample)
