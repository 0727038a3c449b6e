"""dvc stage: fetch the configured dataset's raw files into data/raw/<dataset>."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.download(params.load())


if __name__ == "__main__":
    main()
