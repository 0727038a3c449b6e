"""dvc stage: tables -> item, user and history text with entity spans in data/text."""

from recpipe import params, pipeline, setup_logging


def main() -> None:
    setup_logging()
    pipeline.textualize(params.load())


if __name__ == "__main__":
    main()
