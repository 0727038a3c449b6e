"""dvc stage (once per dataset in p5.datasets): the P5 report, laid out like RecSysLLM's tables."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("p5_report")
