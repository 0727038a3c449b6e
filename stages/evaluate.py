"""dvc stage: evaluate (see recpipe/pipeline.py for its paths)."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("evaluate")
