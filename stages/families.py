"""dvc stage: families (recpipe/steps/families.py)."""

from recpipe.steps import families, stage

if __name__ == "__main__":
    stage.main(families)
