"""dvc stage: train (recpipe/steps/train.py)."""

from recpipe.steps import stage, train

if __name__ == "__main__":
    stage.main(train)
