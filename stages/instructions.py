"""dvc stage: histories -> TALLRec Yes/No samples with a leak-free split."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.instructions(params.load())


if __name__ == "__main__":
    main()
