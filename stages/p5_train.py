"""dvc stage (once per dataset in p5.datasets): LoRA-tune one model on the P5 mixture, into data/p5/<dataset>/adapter."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("p5_train")
