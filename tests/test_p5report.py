import json
import math

import pytest

from recpipe import RecpipeError
from recpipe.p5.report import COLUMNS, load_references, p5_tables, write_p5_report

OURS = {
    "rating": {
        "seen": {"n": 400, "rmse": 1.23456, "mae": 0.9, "unparsable_rate": 0.01, "yes_no_auc": 0.61},
        "unseen": {"n": 400, "rmse": 1.3},
    },
    "sequential": {
        "seen": {"n": 300, "hr@5": 0.03, "ndcg@5": 0.02, "hr@10": 0.05, "ndcg@10": 0.025, "short_lists": 0},
        "unseen": {"n": 300, "hr@5": 0.02, "short_lists": 2},
    },
    "explanation": {"seen": {"bleu": 1.234, "rouge1": 20.5, "rouge2": 3.0, "rougeL": 15.0}, "unseen": {}},
}
# as recpipe.p5.baselines writes it: per-method metrics, plus counts
BASELINES = {
    "popularity": {"sequential": {"hr@5": 0.011, "ndcg@5": 0.007}, "direct": {"hr@1": 0.02}},
    "sasrec": {"sequential": {"hr@10": 0.04}, "best_epoch": 43, "best_valid_ndcg@10": 0.12, "epochs_run": 53},
    "bprmf": {
        "sequential": {"hr@10": 0.03, "ndcg@10": 0.015},
        "best_epoch": 41,
        "best_valid_ndcg@10": 0.07,
        "epochs_run": 51,
    },
    "users": 1000,
    "items": 50,
}


def row(text, start):
    return next(line for line in text.splitlines() if line.startswith(start))


def test_references_hold_the_papers_tables():
    ref = load_references()
    assert ref["arxiv"] == "2308.10837"
    assert set(ref["datasets"]) == {"amazon-sports", "amazon-beauty", "amazon-toys"}
    sizes = {"rating": 6, "sequential": 11, "explanation": 10, "review": 4, "direct": 7}
    for dataset, families in ref["datasets"].items():
        assert {f: len(rows) for f, rows in families.items()} == sizes, dataset
        for family, rows in families.items():
            keys = [(r["method"], r["prompts"], r.get("hints")) for r in rows]
            assert len(set(keys)) == len(keys)  # each method once per prompts (and hints) block
            for r in rows:
                assert r["prompts"] in {"seen", "unseen", "n/a"}
                ours_only = {"review": {"bleu"}, "rating": {"yes_no_auc"}}.get(
                    family, set()
                )  # columns the paper does not print
                assert set(r) - {"method", "prompts", "hints", "note"} == set(COLUMNS[family]) - ours_only

    def find(dataset, family, method, prompts, hints=None):
        return next(
            r
            for r in ref["datasets"][dataset][family]
            if (r["method"], r["prompts"], r.get("hints")) == (method, prompts, hints)
        )

    assert find("amazon-beauty", "sequential", "P5", "seen")["hr@5"] == 0.0508
    assert find("amazon-beauty", "sequential", "P5", "seen")["ndcg@5"] == 0.0379
    assert find("amazon-sports", "rating", "MF", "n/a")["rmse"] == 1.0234
    assert find("amazon-toys", "direct", "RecSysLLM", "unseen")["ndcg@10"] == 0.1028
    assert find("amazon-sports", "explanation", "RecSysLLM", "unseen", True)["bleu"] == 3.9842
    assert find("amazon-sports", "explanation", "P5", "seen", False)["rouge1"] == 14.1589
    assert find("amazon-toys", "review", "T0", "n/a")["bleu2"] == 2.2296
    assert find("amazon-beauty", "direct", "RecSysLLM", "unseen")["hr@1"] == 0.6072  # as printed, with a note
    assert "0.0607" in find("amazon-beauty", "direct", "RecSysLLM", "unseen")["note"]
    assert not any(r["prompts"] == "unseen" for r in ref["datasets"]["amazon-beauty"]["review"])


def test_beauty_tables_show_the_papers_rows_and_ours():
    text = p5_tables("amazon-beauty", OURS, BASELINES, load_references())
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## Protocol",
        "## Rating prediction (RecSysLLM Table 2)",
        "## Sequential recommendation (RecSysLLM Table 4)",
        "## Explanation generation (RecSysLLM Table 5)",
    ]
    assert (
        row(text, "| method | from | prompts | HR@5 |")
        == "| method | from | prompts | HR@5 | NDCG@5 | HR@10 | NDCG@10 |"
    )
    assert row(text, "| P5 | paper | seen | 0.0508") == "| P5 | paper | seen | 0.0508 | 0.0379 | 0.0664 | 0.0429 |"
    assert row(text, "| P5 | paper | unseen | 0.0493") == "| P5 | paper | unseen | 0.0493 | 0.0367 | 0.0645 | 0.0416 |"
    assert row(text, "| MF | paper | n/a |") == "| MF | paper | n/a | 1.1973 | 0.9461 | – |"
    assert (
        row(text, "| recpipe (seen prompts) | this run | seen | 1.2346")
        == "| recpipe (seen prompts) | this run | seen | 1.2346 | 0.9000 | 0.6100 |"
    )
    assert "| Popularity | this run | n/a | 0.0110 | 0.0070 | – | – |" in text
    assert "| SASRec | this run | n/a | – | – | 0.0400 | – |" in text
    assert "| BPR-MF | this run | n/a | – | – | 0.0300 | 0.0150 |" in text
    assert "best_epoch" not in text  # the training bookkeeping is no table row
    # explanation: the two hint blocks kept apart, percentages with 2 decimals
    assert "| RecSysLLM | paper | unseen | with | 5.00 | 27.39 | 6.73 | 22.74 |" in text
    assert "| P5 | paper | seen | without | 0.97 | 16.45 | 1.89 | 11.88 |" in text
    assert "| recpipe (seen prompts) | this run | seen | – | 1.23 | 20.50 | 3.00 | 15.00 |" in text
    assert "rating 400 / 400; sequential 300 / 300; explanation – / –" in text
    assert "leave-one-out" in text and "unparsable_rate 0.0100 / –" in text and "short_lists 0 / 2" in text
    assert (
        "1000 users have a leave-one-out test case, all of them ranked by the baselines; recpipe's sequential rankings cover a subsample of them."
        in text
    )
    assert "| users |" not in text and "| items |" not in text


def test_a_printed_oddity_is_shown_with_its_note():
    ours = {"direct": {"seen": {"hr@1": 0.05}, "unseen": {}}}
    text = p5_tables("amazon-beauty", ours, None, load_references())
    assert "| RecSysLLM [1] | paper | unseen | 0.6072 |" in text
    assert "[1] HR@1 printed as 0.6072" in text


def test_subsampling_is_judged_on_the_ranking_cases():
    # direct mixes ranking and yes/no prompts: n counts both, n_item the ranked cases
    ours = {"direct": {"seen": {"n": 1200, "n_item": 600, "hr@1": 0.1}, "unseen": {"n": 600, "n_item": 600}}}
    text = p5_tables("ml-100k", ours, {"users": 600}, load_references())
    assert (
        "600 users have a leave-one-out test case, all of them ranked by the baselines; recpipe's direct rankings cover all of them."
        in text
    )
    text = p5_tables("ml-100k", ours, {"users": 943}, load_references())
    assert "recpipe's direct rankings cover a subsample of them." in text
    assert "n_item" not in text  # bookkeeping, not listed as a result


def test_ml100k_has_no_paper_rows_and_says_so():
    text = p5_tables("ml-100k", OURS, BASELINES, load_references())
    assert "| paper |" not in text and "(RecSysLLM Table" not in text
    assert "reports no numbers for ml-100k" in text
    assert "| recpipe (unseen prompts) | this run | unseen | 0.0200 | – | – | – |" in text


def test_missing_metrics_are_dashes_and_empty_columns_dropped():
    ours = {"sequential": {"seen": {"hr@5": 0.5, "hr@10": None}, "unseen": {}}, "rating": {"seen": {}, "unseen": {}}}
    text = p5_tables("ml-100k", ours, None, load_references())
    assert (
        row(text, "| method | from | prompts | HR@5") == "| method | from | prompts | HR@5 |"
    )  # no value anywhere: no column
    assert "| recpipe (unseen prompts) | this run | unseen | – |" in text
    assert "No metric of this table (RMSE, MAE, yes/no AUC) has a value." in text
    assert "sequential – / –" in text  # n missing


def test_unknown_family_is_an_error():
    with pytest.raises(RecpipeError, match="unknown task families"):
        p5_tables("ml-100k", {"ranking": {"seen": {}}}, None, load_references())


def write_inputs(root, ours=OURS):
    metrics = root / "metrics"
    metrics.mkdir()
    for family, m in ours.items():
        (metrics / f"{family}.json").write_text(json.dumps(m))
    (root / "baselines.json").write_text(json.dumps(BASELINES))
    return metrics, root / "baselines.json"


def test_write_p5_report_writes_the_file(tmp_path):
    metrics, baselines = write_inputs(tmp_path)
    out = tmp_path / "reports" / "p5.md"
    summary = {
        "model": "org/model",
        "lora": {"rank": 8},
        "p5": {"families": ["rating", "sequential"], "train": {"epochs": 2}},
    }
    text = write_p5_report("amazon-beauty", metrics, baselines, out, summary)
    assert out.read_text() == text
    assert text.startswith("# recpipe P5 report: amazon-beauty")
    assert "| model | org/model |" in text and "| lora.rank | 8 |" in text
    assert "| p5.families | rating, sequential |" in text and "| p5.train.epochs | 2 |" in text
    assert "| Popularity | this run | n/a | 0.0110 | 0.0070 |" in text
    assert [p.name for p in out.parent.iterdir()] == ["p5.md"]
    text = write_p5_report("ml-100k", metrics, baselines, out, summary, indexing="sequential")
    assert "| recpipe (seen prompts) | sequential | this run | 0.0300 |" in text


def test_write_p5_report_names_a_bad_metrics_file_and_leaves_nothing(tmp_path):
    metrics, baselines = write_inputs(tmp_path)
    (metrics / "sequential.json").write_text("{not json")
    out = tmp_path / "reports" / "p5.md"
    out.parent.mkdir()
    out.write_text("old report")
    with pytest.raises(RecpipeError, match=r"sequential\.json: not valid JSON"):
        write_p5_report("amazon-beauty", metrics, baselines, out, {})
    assert out.read_text() == "old report"
    assert [p.name for p in out.parent.iterdir()] == ["p5.md"]  # no temporary file left


def test_write_p5_report_rejects_a_wrong_shape_a_missing_file_and_an_empty_dir(tmp_path):
    metrics, baselines = write_inputs(tmp_path)
    (metrics / "rating.json").write_text(json.dumps({"seen": [1, 2]}))
    with pytest.raises(RecpipeError, match=r"rating\.json: expected"):
        write_p5_report("ml-100k", metrics, baselines, tmp_path / "p5.md", {})
    (metrics / "rating.json").write_text(json.dumps({"seen": {}}))
    with pytest.raises(RecpipeError, match=r"nope\.json: not found \(the baselines stage writes it\)"):
        write_p5_report("ml-100k", metrics, tmp_path / "nope.json", tmp_path / "p5.md", {})
    with pytest.raises(RecpipeError, match=r"gone\.parquet not found \(the recpipe predictions"):
        write_p5_report(
            "ml-100k",
            metrics,
            baselines,
            tmp_path / "p5.md",
            {},
            {"recpipe": tmp_path / "gone.parquet", "baselines": tmp_path / "gone.parquet"},
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecpipeError, match="no metrics files"):
        write_p5_report("ml-100k", empty, None, tmp_path / "p5.md", {})
    assert not (tmp_path / "p5.md").exists()


def test_hit_rates_come_with_their_wilson_interval():
    from recpipe.metrics import hit_rate_interval

    def wilson(k, n, z=1.959964):  # the closed form, written out
        p = k / n
        mid, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (mid - half) / (1 + z * z / n), (mid + half) / (1 + z * z / n)

    for hr, n in ((0.04, 100), (0.2069, 58), (0.0, 100), (1.0, 20)):
        assert hit_rate_interval(hr, n) == pytest.approx(wilson(round(hr * n), n), abs=1e-6)
    text = p5_tables("ml-100k", OURS, BASELINES, load_references())
    low, high = wilson(40, 1000)  # SASRec: HR@10 0.04 over all 1000 users
    line = row(text, "HR@10 with its 95% interval")
    assert f"SASRec 0.0400 [{low:.4f}, {high:.4f}] (n 1000)" in line
    assert "recpipe (seen prompts) 0.0500 [" in line and "(n 300)" in line
    assert "BPR-MF 0.0300 [" in line
    assert "Popularity" not in line and "unseen" not in line  # no HR@10 in those rows


def test_paired_tests_count_the_cases_only_one_method_hits():
    import polars as pl

    from recpipe.p5.report import paired_tests

    # Sequential, seen prompts: recpipe hits users 1-3, popularity users 3-9 (ranked lists of 10 or fewer).
    ours = pl.DataFrame(
        {
            "family": ["sequential"] * 10 + ["rating"],
            "seen": [True] * 11,
            "kind": ["item"] * 10 + ["rating"],
            "user_id": list(range(1, 11)) + [1],
            "item_id": [100] * 10 + [5],
            "ranked": [[100] if u <= 3 else [7] for u in range(1, 11)] + [None],
        }
    )
    base = pl.DataFrame(
        {
            "method": ["popularity"] * 12,
            "family": ["sequential"] * 12,
            "user_id": list(range(1, 13)),
            "item_id": [100] * 12,
            "ranked": [
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100] if u <= 2 else ([100] if u <= 9 else [8]) for u in range(1, 13)
            ],
        }
    )
    lines = paired_tests(ours, base)
    # Only recpipe: users 1 and 2 (popularity has them 11th); only popularity: users 4-9. Users 11-12 were not asked of recpipe.
    p = 2 * sum(math.comb(8, i) for i in range(3)) / 2**8  # the exact two-sided binomial test, 2 of 8
    assert lines == {
        "sequential": f"Paired on the same cases, HR@10 (cases only one of the two hits, exact McNemar p): recpipe (seen prompts) 2 vs Popularity 6, p {p:.3f} (n 10)."
    }
    assert "Paired on the same cases" in p5_tables("ml-100k", OURS, BASELINES, load_references(), lines)


def test_openp5_indexings_sit_beside_this_runs_sequential_figures():
    ref = load_references()["openp5"]
    assert ref["arxiv"] == "2306.11134" and ref["model"] == "T5-small" and ref["prompts"] == "seen"
    assert {r["indexing"]: [r[c] for c in COLUMNS["sequential"]] for r in ref["datasets"]["ml-100k"]["sequential"]} == {
        "random": [0.0551, 0.0352, 0.0922, 0.0470],
        "sequential": [0.0678, 0.0427, 0.1208, 0.0595],
        "collaborative": [0.0530, 0.0331, 0.1006, 0.0481],
    }
    text = p5_tables("ml-100k", OURS, BASELINES, load_references(), indexing="collaborative")
    assert "## Item indexing (OpenP5, arXiv 2306.11134)" in text
    assert "| OpenP5 (T5-small, seen prompts) | sequential | published | 0.0678 | 0.0427 | 0.1208 | 0.0595 |" in text
    assert "| recpipe (seen prompts) | collaborative | this run | 0.0300 | 0.0200 | 0.0500 | 0.0250 |" in text
    assert "not a matched comparison" in text and "consecutive ids give away sequence order" in text
    # After the sequential table, before the next family's.
    assert (
        text.index("## Sequential recommendation")
        < text.index("## Item indexing")
        < text.index("## Explanation generation")
    )
    assert "this run writes items as `p5.indexing` says" in text.lower()
    assert "## Item indexing" not in p5_tables(
        "amazon-beauty", OURS, BASELINES, load_references()
    )  # OpenP5 rows are ML-100K's
    assert "## Item indexing" not in p5_tables(
        "ml-100k", {"rating": OURS["rating"]}, None, load_references()
    )  # no sequential figures


def test_validation_figures_say_so():
    text = p5_tables(
        "ml-100k",
        {"sequential": {"seen": OURS["sequential"]["seen"], "unseen": {"n": 0}}},
        None,
        load_references(),
        split="valid",
    )
    assert "Validation samples n (seen / unseen prompts): sequential 300 / 0." in text and "Test cases n" not in text
    assert "p5.evaluate_split: valid" in text and "| SASRec |" not in text
    assert "p5.evaluate_split" not in p5_tables("ml-100k", OURS, BASELINES, load_references())
