"""dvc stage (once per dataset): tables -> item, user and history text with entity spans in data/text/<dataset>."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("textualize")
