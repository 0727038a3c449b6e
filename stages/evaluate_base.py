"""dvc stage: evaluate_base (recpipe/steps/evaluate_base.py)."""

from recpipe.steps import evaluate_base, stage

if __name__ == "__main__":
    stage.main(evaluate_base)
