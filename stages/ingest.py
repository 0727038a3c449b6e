"""dvc stage: raw files -> validated canonical parquet tables in data/tables."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.ingest(params.load())


if __name__ == "__main__":
    main()
