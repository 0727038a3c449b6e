"""dvc stage (once per dataset in recsysllm.datasets): RecSysLLM's masked pretraining, into data/recsysllm/<dataset>/pretrained."""

from recpipe import pipeline

if __name__ == "__main__":
    pipeline.main("pretrain")
