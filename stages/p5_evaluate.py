"""dvc stage (once per dataset in p5.datasets): score every family's test cases, seen and unseen templates apart."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("p5_evaluate")
