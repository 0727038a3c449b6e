"""dvc stage (once per dataset in p5.datasets): every P5 family's samples and the item names, into data/p5/<dataset>/families."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("families")
