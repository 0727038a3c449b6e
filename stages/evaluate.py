"""dvc stage: evaluate (recpipe/steps/evaluate.py)."""

from recpipe.steps import evaluate, stage

if __name__ == "__main__":
    stage.main(evaluate)
