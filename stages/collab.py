"""dvc stage: collab (recpipe/steps/collab.py)."""

from recpipe.steps import collab, stage

if __name__ == "__main__":
    stage.main(collab)
