"""dvc stage: download (recpipe/steps/download.py)."""

from recpipe.steps import download, stage

if __name__ == "__main__":
    stage.main(download)
