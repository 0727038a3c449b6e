"""dvc stage (once per dataset): fetch its raw files into data/raw/<dataset>."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("download")
