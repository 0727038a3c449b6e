"""dvc stage (once per dataset in p5.datasets): the P5 training mixture, validation set and test cases, into data/p5/<dataset>/shots."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("p5_sample")
