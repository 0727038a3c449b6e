"""dvc stage: K-shot training set and validation set in data/sample."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.sample(params.load())


if __name__ == "__main__":
    main()
