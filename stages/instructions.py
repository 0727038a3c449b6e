"""dvc stage: instructions (recpipe/steps/instructions.py)."""

from recpipe.steps import instructions, stage

if __name__ == "__main__":
    stage.main(instructions)
