"""Amazon (2014 dumps) and BookCrossing (BX-CSV-Dump) readers, on small fixtures written here in
exactly the real formats, quirks included; and both datasets through the pipeline's steps."""

import gzip
import json
import random
import zipfile

import polars as pl
import pytest

from recpipe import RecpipeError
from recpipe.cli import STEPS
from recpipe.data.download import download
from recpipe.data.ingest import ingest, k_core
from recpipe.params.schema import parse
from recpipe.steps import paths

N_USERS, N_ITEMS, PER_USER = 30, 50, 20


def amazon_records(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Reviews and metadata as the 2014 dumps hold them, with their quirks."""
    rng = random.Random(seed)
    reviews = []
    for u in range(N_USERS):
        t = 1_300_000_000 + rng.randrange(10**6)
        for i in rng.sample(range(N_ITEMS), PER_USER):
            t += rng.choice([0, 86400])  # review times are whole days: many ties
            r = {
                "reviewerID": f"A{u:05d}XYZ",
                "asin": f"B00{i:07d}",
                "reviewerName": f"Shopper {u}",
                "helpful": [0, 0],
                "reviewText": f"Review {u}-{i}: très bien",
                "overall": float(rng.randint(1, 5)),
                "summary": f"Summary {u}-{i}",
                "unixReviewTime": t,
                "reviewTime": "01 1, 2013",
            }
            reviews.append(r)
    del reviews[3]["reviewText"]  # some reviews have no text
    reviews.append(
        {**reviews[5], "overall": 1.0, "unixReviewTime": reviews[5]["unixReviewTime"] + 86400}
    )  # a duplicate, later
    meta = []
    for i in range(N_ITEMS + 20):  # the dump covers items nobody in the 5-core file reviewed
        m = {
            "asin": f"B00{i:07d}",
            "title": f"Lip Balm &amp; Gloss No. {i}",
            "price": 3.5 + i,
            "imUrl": "http://ecx.images-amazon.com/x.jpg",
            "related": {"also_bought": [f"B00{(i + 1) % N_ITEMS:07d}"]},
            "salesRank": {"Beauty": 1000 + i},
            "categories": [["Beauty", "Makeup", "Lips"], ["Beauty", "Skin Care"]],
            "brand": "Acme",
        }
        if i == 7:
            del m["title"]  # an item with no title: it and its reviews are dropped
        if i == 8:
            del m["brand"], m["price"]
        meta.append(m)
    return reviews, meta


def amazon_files(tmp_path, reviews, meta, meta_lines=None):
    rev = tmp_path / "reviews_Beauty_5.json.gz"
    rev.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in reviews).encode()))
    met = tmp_path / "meta_Beauty.json.gz"
    lines = meta_lines if meta_lines is not None else [repr(m) for m in meta]  # Python literals, not JSON
    met.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    return rev, met


def amazon_source(rev, met):
    return {
        "name": "snap",
        "format": "amazon",
        "files": {"interactions": {"url": rev.as_uri()}, "items": {"url": met.as_uri()}},
    }


def bx_files(seed: int = 0) -> dict[str, bytes]:
    """The BX-CSV-Dump: ';'-separated, every field quoted, latin-1."""
    rng = random.Random(seed)
    q = lambda *fields: ";".join(f'"{f}"' for f in fields) + "\r\n"  # noqa: E731
    ratings = q("User-ID", "ISBN", "Book-Rating")
    for u in range(1, N_USERS + 1):
        for i in rng.sample(range(N_ITEMS), PER_USER):
            ratings += q(u, f"03{i:07d}X", rng.choice([0, 3, 5, 6, 8, 10]))
    ratings += q(1, "9999999999", 7)  # an ISBN with no book record
    books = q(
        "ISBN",
        "Book-Title",
        "Book-Author",
        "Year-Of-Publication",
        "Publisher",
        "Image-URL-S",
        "Image-URL-M",
        "Image-URL-L",
    )
    for i in range(N_ITEMS):
        title = {0: "Les Misérables", 1: "Cats &amp; Dogs", 2: "Semi; Colon", 3: "Readers (Level 4)\\"}.get(
            i, f"Book {i}"
        )
        books += q(
            f"03{i:07d}x",
            title,
            "Victor Hugo",
            0 if i == 4 else 1990 + i % 10,
            "Penguin",
            "http://s",
            "http://m",
            "http://l",
        )
    users = q("User-ID", "Location", "Age")
    for u in range(1, N_USERS + 1):
        users += (
            f'"{u}";"paris, ile-de-france, france";'
            + ("NULL" if u % 3 == 0 else '"244"' if u == 4 else f'"{20 + u}"')
            + "\r\n"
        )
    return {
        "BX-Book-Ratings.csv": ratings.encode("latin-1"),
        "BX-Books.csv": books.encode("latin-1"),
        "BX-Users.csv": users.encode("latin-1"),
    }


def bx_zip(tmp_path, files=None):
    path = tmp_path / "BX-CSV-Dump.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in (files or bx_files()).items():
            zf.writestr(name, data)
    return path


def bx_source(path):
    members = {"interactions": "BX-Book-Ratings.csv", "items": "BX-Books.csv", "users": "BX-Users.csv"}
    return {"name": "bx", "format": "bookcrossing", "encoding": "latin-1", "url": path.as_uri(), "members": members}


def dataset(source: dict, **extra):
    p = parse({"datasets": ["d"], "dataset": "d", "registry": {"d": {"sources": [source], **extra}}})
    return p.registry["d"]


def fetch_and_ingest(tmp_path, source, **extra):
    ds = dataset(source, **extra)
    download("d", ds, tmp_path / "raw")
    return ingest(tmp_path / "raw", tmp_path / "tables", ds)


def test_amazon_reader_handles_the_dumps_quirks(tmp_path):
    reviews, meta = amazon_records()
    t = fetch_and_ingest(tmp_path, amazon_source(*amazon_files(tmp_path, reviews, meta)))
    items, inter, users = t["items"], t["interactions"], t["users"]
    assert set(inter.columns) >= {"user_id", "item_id", "rating", "timestamp", "summary", "review"}
    assert items["title"][0] == "Lip Balm & Gloss No. 0"  # HTML entity unescaped
    assert "B000000007" not in items["asin"].to_list()  # no title: dropped with its reviews
    assert items.height == N_ITEMS - 1 and users.height == N_USERS  # unreviewed metadata is not kept
    assert items.filter(pl.col("asin") == "B000000008")["brand"][0] is None
    assert items["categories"][0].to_list() == ["Beauty", "Makeup", "Lips", "Skin Care"]
    n_reviews_of_7 = sum(r["asin"] == "B000000007" for r in reviews)
    assert inter.height == len(reviews) - 1 - n_reviews_of_7  # the duplicate review collapsed
    dup = reviews[5]
    kept = (
        inter.join(users, on="user_id")
        .join(items, on="item_id")
        .filter((pl.col("reviewer_id") == dup["reviewerID"]) & (pl.col("asin") == dup["asin"]))
    )
    assert kept.height == 1 and kept["rating"][0] == 1.0  # the later review wins
    assert inter["review"].null_count() == 1 and "très bien" in inter["review"][0]
    assert items["item_id"].to_list() == sorted(items["item_id"].to_list())


def test_amazon_ids_do_not_depend_on_file_order(tmp_path):
    reviews, meta = amazon_records()
    a = fetch_and_ingest(tmp_path / "a", amazon_source(*amazon_files(tmp_path, reviews, meta)))
    random.Random(1).shuffle(reviews)
    random.Random(1).shuffle(meta)
    (tmp_path / "b").mkdir()
    b = fetch_and_ingest(tmp_path / "b", amazon_source(*amazon_files(tmp_path / "b", reviews, meta)))
    assert a["items"].equals(b["items"]) and a["users"].equals(b["users"])
    key = ["user_id", "item_id"]
    # The same interactions under the same ids; only `row`, their place in each file, differs.
    assert a["interactions"].drop("row").sort(key).equals(b["interactions"].drop("row").sort(key))


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (
            "{'asin': 'B000000001', 'title': __import__('os').system('echo pwned')}",
            r"items:2: metadata record is not a plain Python literal",
        ),
        ("{'asin': 'B000000001', 'title': 'Unclosed", r"items:2: metadata record is not a plain Python literal"),
        ("['B000000001', 'a list']", r"items:2: metadata record is not a dict with an 'asin'"),
    ],
)
def test_unsafe_or_malformed_metadata_names_file_and_line(tmp_path, bad_line, message):
    reviews, meta = amazon_records()
    lines = [repr(m) for m in meta]
    lines[1] = bad_line
    src = amazon_source(*amazon_files(tmp_path, reviews, meta, meta_lines=lines))
    with pytest.raises(RecpipeError, match=message):
        fetch_and_ingest(tmp_path, src)
    assert not (tmp_path / "tables").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rs: rs.__setitem__(2, "{not json"), r"interactions:3: not a JSON review record"),
        (
            lambda rs: rs.__setitem__(2, json.dumps({"asin": "B000000001", "overall": 5.0, "unixReviewTime": 1})),
            r"interactions:3: review record lacks \['reviewerID'\]",
        ),
        (
            lambda rs: rs.__setitem__(
                2, json.dumps({"reviewerID": "A", "asin": "B000000001", "overall": "five", "unixReviewTime": 1})
            ),
            r":3: 'overall' and 'unixReviewTime' must be numbers",
        ),
    ],
)
def test_malformed_review_lines_name_file_and_line(tmp_path, mutate, message):
    reviews, meta = amazon_records()
    rev, met = amazon_files(tmp_path, reviews, meta)
    lines = gzip.decompress(rev.read_bytes()).decode().splitlines()
    mutate(lines)
    rev.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(RecpipeError, match=message):
        fetch_and_ingest(tmp_path, amazon_source(rev, met))


def test_truncated_gzip_is_a_clear_error(tmp_path):
    rev, met = amazon_files(tmp_path, *amazon_records())
    rev.write_bytes(rev.read_bytes()[:300])
    with pytest.raises(
        RecpipeError, match=r"reviews_Beauty_5.json.gz|interactions: not a readable gzip file \(truncated or corrupt\)"
    ):
        fetch_and_ingest(tmp_path, amazon_source(rev, met))


def test_unreachable_host_lists_each_file_that_failed(tmp_path):
    src = {
        "name": "snap",
        "format": "amazon",
        "files": {
            "interactions": {"url": "http://unreachable.invalid/reviews.json.gz"},
            "items": {"url": "http://unreachable.invalid/meta.json.gz"},
        },
    }
    with pytest.raises(
        RecpipeError,
        match=r"all sources for dataset 'd' failed: snap: cannot fetch http://unreachable.invalid/reviews.json.gz",
    ):
        download("d", dataset(src), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_files_checksums_are_verified(tmp_path):
    rev, met = amazon_files(tmp_path, *amazon_records())
    src = amazon_source(rev, met)
    src["files"]["items"]["sha256"] = "0" * 64
    with pytest.raises(
        RecpipeError,
        match=r"checksum mismatch for source 'snap/items' \(meta_Beauty.json.gz\): expected sha256 0{64}, got [0-9a-f]{64}",
    ):
        download("d", dataset(src), tmp_path / "raw")


def test_k_core_is_iterative():
    # user 3 has one rating; once it goes, item 30 has only one and goes too.
    inter = pl.DataFrame({"user_id": [1, 1, 2, 2, 3, 1], "item_id": [10, 20, 10, 20, 30, 30]})
    assert sorted(k_core(inter, 2).rows()) == [(1, 10), (1, 20), (2, 10), (2, 20)]


def test_bookcrossing_reader_handles_the_dumps_quirks(tmp_path):
    t = fetch_and_ingest(tmp_path, bx_source(bx_zip(tmp_path)), rating_max=10)
    items, inter, users = t["items"], t["interactions"], t["users"]
    titles = dict(zip(items["isbn"], items["title"]))
    assert titles["030000000X"] == "Les Misérables"  # latin-1; ISBN case unified
    assert titles["030000001X"] == "Cats & Dogs" and titles["030000002X"] == "Semi; Colon"
    assert titles["030000003X"] == "Readers (Level 4)"  # the stray backslash before the quote
    assert items.filter(pl.col("isbn") == "030000004X")["year"][0] is None  # year 0 is unknown
    assert inter["rating"].null_count() == 0 and inter["rating"].min() >= 3  # implicit 0s dropped
    assert inter["timestamp"].null_count() == inter.height  # the dump has no times
    ages = dict(zip(users["user_id"], users["age"]))
    assert ages[3] is None and ages[4] is None and ages[1] == 21  # NULL and 244 are unknown


def test_bookcrossing_implicit_kept_is_never_a_dislike(tmp_path):
    kept = fetch_and_ingest(tmp_path, bx_source(bx_zip(tmp_path)), rating_max=10, implicit="keep")["interactions"]
    assert kept["rating"].null_count() > 0  # unrated, not rating 0
    from recpipe.tallrec.instructions import candidate_samples

    hist = __import__("recpipe.data.splits", fromlist=["user_histories"]).user_histories(kept)
    samples = candidate_samples(hist, history_len=5, like_threshold=5)
    assert samples["rating"].null_count() == 0  # an implicit interaction is never a target


def test_bookcrossing_malformed_row_names_file_and_line(tmp_path):
    files = bx_files()
    lines = files["BX-Books.csv"].decode("latin-1").split("\r\n")
    lines[3] = '"0300000002X";"Only two fields"'
    files["BX-Books.csv"] = "\r\n".join(lines).encode("latin-1")
    with pytest.raises(RecpipeError, match=r"items:4: 2 fields, expected 8"):
        fetch_and_ingest(tmp_path, bx_source(bx_zip(tmp_path, files)), rating_max=10)


def test_bookcrossing_bad_rating_is_rejected(tmp_path):
    files = bx_files()
    files["BX-Book-Ratings.csv"] += b'"5";"030000001X";"11"\r\n'
    with pytest.raises(RecpipeError, match=r"interactions: column 'rating' fails in_range\(1, 10(\.0)?\) in 1 rows"):
        fetch_and_ingest(tmp_path, bx_source(bx_zip(tmp_path, files)), rating_max=10)


def _pipeline_params(sources: dict, **sections) -> dict:
    data = {
        "seed": 0,
        "datasets": list(sources),
        "dataset": next(iter(sources)),
        "registry": sources,
        "instructions": {"history_len": 5, "pool_size": 200},
        "sample": {"k": 8, "valid_size": 5},
    }
    data.update(sections)
    return data


@pytest.mark.parametrize("which", ["amazon", "bookcrossing"])
def test_end_to_end_data_stages(tmp_path, monkeypatch, which):
    """download -> ingest -> textualize -> instructions -> sample, through the steps' standard paths."""
    if which == "amazon":
        src = {
            "template": "amazon",
            "k_core": 5,
            "sources": [amazon_source(*amazon_files(tmp_path, *amazon_records()))],
        }
        sections = {"instructions": {"history_len": 5, "pool_size": 200, "template": "tallrec-products"}}
        name = "amazon-beauty"
    else:
        src = {"template": "bookcrossing", "rating_max": 10, "sources": [bx_source(bx_zip(tmp_path))]}
        sections = {
            "instructions": {
                "history_len": 5,
                "pool_size": 200,
                "template": "tallrec-books",
                "like_threshold": 5,
                "split": "paper",
            }
        }
        name = "bookcrossing"
    p = parse(_pipeline_params({name: src}, **sections))
    monkeypatch.chdir(tmp_path)
    for step in ("download", "ingest", "textualize"):
        STEPS[step].run(p, name)
    for step in ("instructions", "sample"):
        STEPS[step].run(p)
    items = pl.read_parquet(f"data/text/{name}/items.parquet")
    expected = {
        "amazon": "Lip Balm & Gloss No. 0. Brand: Acme. Categories: Beauty, Makeup, Lips, Skin Care.",
        "bookcrossing": "Les Misérables by Victor Hugo, published by Penguin in 1990.",
    }[which]
    assert expected in items["text"].to_list()
    users = pl.read_parquet(f"data/text/{name}/users.parquet")["text"].to_list()
    assert which == "amazon" or (
        "A reader aged 21 from paris, ile-de-france, france." in users
        and "A reader from paris, ile-de-france, france." in users
    )
    samples = pl.read_parquet(paths.SAMPLES)
    assert set(samples["split"]) == {"train", "valid", "test"}
    assert samples["prompt"].str.contains("Yes.").all() and samples["answer"].is_in(["Yes.", "No."]).all()
    test = samples.filter(pl.col("split") == "test").select("user_id", "item_id")
    assert samples.filter(pl.col("split") != "test").join(test, on=["user_id", "item_id"], how="semi").height == 0
    assert pl.read_parquet("data/sample/train.parquet").height == 8


def test_temporal_split_refuses_a_dataset_without_times(tmp_path, monkeypatch):
    src = {"template": "bookcrossing", "rating_max": 10, "sources": [bx_source(bx_zip(tmp_path))]}
    p = parse(_pipeline_params({"bookcrossing": src}, instructions={"history_len": 5, "pool_size": 200}))
    monkeypatch.chdir(tmp_path)
    for step in ("download", "ingest", "textualize"):
        STEPS[step].run(p, "bookcrossing")
    with pytest.raises(RecpipeError, match="no timestamps.*split: paper"):
        STEPS["instructions"].run(p)
