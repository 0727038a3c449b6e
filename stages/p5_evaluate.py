"""dvc stage: p5_evaluate (recpipe/steps/p5_evaluate.py)."""

from recpipe.steps import p5_evaluate, stage

if __name__ == "__main__":
    stage.main(p5_evaluate)
