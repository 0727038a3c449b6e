"""dvc stage: K-shot training set and validation set in data/sample."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("sample")
