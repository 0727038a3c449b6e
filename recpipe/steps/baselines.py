"""baselines@<dataset>: popularity, SASRec and BPR-MF on the P5 test cases
(data/p5/<dataset>/baselines, reports/p5/<dataset>/baselines.json)."""

from recpipe.params.core import Common
from recpipe.params.p5 import P5
from recpipe.steps.paths import P5_DATA, P5_REPORTS, TABLES, dataset_dir

FOR_EACH = "p5.datasets"


class StepParams(Common):
    p5: P5


def run(p: StepParams, dataset: str) -> None:
    import polars as pl

    from recpipe.io import atomic_dir, read_parquet, write_json, write_parquet
    from recpipe.p5.baselines import baselines

    interactions = read_parquet(f"{dataset_dir(TABLES, dataset)}/interactions.parquet", "ingest")
    test = read_parquet(f"{dataset_dir(P5_DATA, dataset)}/shots/test.parquet", "p5_sample")
    asked = set(test.filter(pl.col("family") == "sequential")["user_id"].to_list()) or None
    metrics, cases = baselines(interactions, test, p.p5.sasrec, p.seed, sequential_users=asked, bprmf=p.p5.bprmf)
    with atomic_dir(f"{dataset_dir(P5_DATA, dataset)}/baselines") as tmp:
        write_parquet(cases, tmp / "predictions.parquet")
    write_json(metrics, f"{dataset_dir(P5_REPORTS, dataset)}/baselines.json")
