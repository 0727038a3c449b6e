"""dvc stage: textualize (recpipe/steps/textualize.py)."""

from recpipe.steps import stage, textualize

if __name__ == "__main__":
    stage.main(textualize)
