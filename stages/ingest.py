"""dvc stage: raw files -> validated canonical parquet tables in data/tables."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("ingest")
