"""dvc stage (once per dataset in p5.datasets): popularity and SASRec on the same leave-one-out split."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("baselines")
