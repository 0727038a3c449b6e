"""dvc stage (once per dataset): raw files -> validated canonical parquet tables in data/tables/<dataset>."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("ingest")
