"""dvc stage: p5_train (recpipe/steps/p5_train.py)."""

from recpipe.steps import p5_train, stage

if __name__ == "__main__":
    stage.main(p5_train)
