"""dvc stage: histories -> TALLRec Yes/No samples with a leak-free split."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("instructions")
