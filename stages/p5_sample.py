"""dvc stage: p5_sample (recpipe/steps/p5_sample.py)."""

from recpipe.steps import p5_sample, stage

if __name__ == "__main__":
    stage.main(p5_sample)
