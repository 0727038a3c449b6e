"""dvc stage: tables -> item, user and history text with entity spans in data/text."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("textualize")
