"""dvc stage: ingest (recpipe/steps/ingest.py)."""

from recpipe.steps import ingest, stage

if __name__ == "__main__":
    stage.main(ingest)
