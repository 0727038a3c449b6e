"""dvc stage: train (see recpipe/pipeline.py for its paths)."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.train(params.load())


if __name__ == "__main__":
    main()
