"""dvc stage: evaluate_base (see recpipe/pipeline.py for its paths)."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.evaluate_base(params.load())


if __name__ == "__main__":
    main()
