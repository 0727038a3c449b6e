"""dvc stage: pretrain (recpipe/steps/pretrain.py)."""

from recpipe.steps import pretrain, stage

if __name__ == "__main__":
    stage.main(pretrain)
