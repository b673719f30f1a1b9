"""The feature job's three faces (Spark, single-process pyarrow, `ml-demo features`) against
the brute-force reference, on seed-format files; and what they do with bad input."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from feature_reference import Batch, generate_batch, kernel_inputs, reference_features, write_batch

from glue import contract
from glue.batch import read_staging_csv
from glue.contract import BatchInput
from glue.feature_job import build_features
from glue.feature_kernel import compute_features
from glue.feature_local import build_features_local
from ml_demo_dagster.cli import main
from ml_demo_dagster.core import staging

HISTORY = 20


def _batches(tmp_path, seeds):
    out = []
    for seed in seeds:
        batch = generate_batch(seed)
        deals, price = write_batch(tmp_path, str(1_700_000_000_000 + seed), batch)
        out.append((BatchInput(str(seed), str(deals), str(price)), batch))
    return out


def _by_batch(path) -> dict[str, dict]:
    table = pq.read_table(path)
    result = {}
    for batch_id in set(table.column("batch").to_pylist()):
        part = table.filter(table.column("batch").to_numpy(zero_copy_only=False) == batch_id)
        order = np.argsort(part.column("timestamp").to_numpy(), kind="stable")
        result[batch_id] = {
            c: part.column(c).to_numpy(zero_copy_only=False)[order] for c in contract.OUTPUT_COLUMNS[1:5]
        }
        result[batch_id]["features"] = contract.features_matrix(part.column("features"))[order]
    return result


def _assert_equals_reference(got: dict, batch: Batch, history: int) -> dict:
    rows, counts = reference_features(batch, history)
    assert got["timestamp"].tolist() == [r["timestamp"] for r in rows]
    assert got["label"].tolist() == [r["label"] for r in rows]
    assert got["duration_ms"].tolist() == [r["duration_ms"] for r in rows]
    assert got["duration_known"].tolist() == [r["duration_known"] for r in rows]
    np.testing.assert_allclose(got["features"], np.array([r["features"] for r in rows]), atol=1e-4, rtol=0)
    return counts


@pytest.mark.spark
def test_spark_job_local_job_and_kernel_agree_and_equal_the_reference(spark, tmp_path):
    inputs = _batches(tmp_path, seeds=[3, 4, 5])
    batches = [b for b, _ in inputs]
    spark_report = build_features(spark, batches, str(tmp_path / "spark-out"), HISTORY)
    local_report = build_features_local(batches, tmp_path / "local-out", HISTORY)
    spark_rows, local_rows = _by_batch(tmp_path / "spark-out"), _by_batch(tmp_path / "local-out")
    assert set(spark_rows) == set(local_rows) == {"3", "4", "5"}
    for batch_input, batch in inputs:
        counts = _assert_equals_reference(spark_rows[batch_input.batch_id], batch, HISTORY)
        _assert_equals_reference(local_rows[batch_input.batch_id], batch, HISTORY)
        kernel = compute_features(**kernel_inputs(batch), history_seconds=HISTORY)
        for got in (spark_rows[batch_input.batch_id], local_rows[batch_input.batch_id]):
            np.testing.assert_array_equal(got["features"], kernel.features)  # bit for bit
            assert got["duration_ms"].tolist() == kernel.duration_ms.tolist()
        assert spark_report.batches[batch_input.batch_id] == counts
        assert local_report.batches[batch_input.batch_id] == counts
    assert spark_report.totals() == local_report.totals()
    assert spark_report.totals()["rows"] == sum(len(v["timestamp"]) for v in spark_rows.values())
    # Wide float data is written without dictionary encoding.
    part = next(
        p for p in (tmp_path / "spark-out").iterdir() if p.suffix == ".parquet" and pq.read_metadata(p).num_rows
    )
    encodings = pq.read_metadata(part).row_group(0).column(5).encodings
    assert not any("DICTIONARY" in e for e in encodings)


@pytest.mark.spark
def test_seed_format_quirks_parse_in_spark_and_pyarrow_alike(spark, tmp_path):
    # The seed's streamer: quoted numbers ("0", and every field after a CHANGE of 0), numbers as
    # JavaScript prints them, empty fields for missing values.
    t0 = 1_600_000_000_000
    price_lines = [
        f'{t0},5934.209999999999,5974.21,5900.5,12.5,0.2,5990,5880.25,"10:00:00","TRADEABLE","0"',
        f'{t0 + 1000},"5936.1","5976.1","5900.5","0","0","5990","5880.25","10:00:01","TRADEABLE","0"',
        f'{t0 + 2000},5937.3,5977.3,,1,0.01,,5880.25,"10:00:02","TRADEABLE",',
        f'{t0 + 3000},5940.55,5980.55,5900.5,1,0.01,5990,5880.25,"10:00:03","TRADEABLE",0',
    ]
    deal_lines = [
        f'{t0 + 2000},"loss","buy",20,20,5977.3,5957.3,5997.3',
        f'{t0 + 3000},"profit","buy",20,20,5980.55,5960.55,6000.55',
    ]
    price, deals = tmp_path / "price.csv", tmp_path / "deals.csv"
    price.write_text("\n".join(price_lines) + "\n")
    deals.write_text("\n".join(deal_lines) + "\n")
    staging.read_prices(price.read_bytes(), str(price))  # the contract accepts it as it is
    staging.read_deals(deals.read_bytes(), str(deals))
    table = read_staging_csv(price, contract.PRICE_COLUMNS)
    assert table.column("BID").to_pylist()[:2] == [5934.209999999999, 5936.1]
    assert table.column("MID_OPEN").to_pylist()[2] is None and table.column("MARKET_DELAY").to_pylist()[1:3] == [
        0,
        None,
    ]

    batch = [BatchInput("q", str(deals), str(price))]
    spark_report = build_features(spark, batch, str(tmp_path / "spark-out"), 2)
    local_report = build_features_local(batch, tmp_path / "local-out", 2)
    expected = {"deals": 2, "rows": 1, "no_history": 0, "no_tick": 0, "missing_tick_values": 1}
    assert spark_report.batches["q"] == local_report.batches["q"] == expected
    spark_rows, local_rows = _by_batch(tmp_path / "spark-out")["q"], _by_batch(tmp_path / "local-out")["q"]
    mid = (5940.55 + 5980.55) / 2
    want = [5940.55 - mid, 5980.55 - mid, 5900.5 - mid, 5990 - mid, 5880.25 - mid, 5956.1 - mid, 5957.3 - mid]
    np.testing.assert_allclose(spark_rows["features"][0], want, atol=1e-3)
    np.testing.assert_array_equal(spark_rows["features"], local_rows["features"])


@pytest.mark.spark
def test_cli_features_writes_expanded_columns_equal_to_the_reference(spark, tmp_path, capsys):
    batch = generate_batch(11, n_ticks=1200)
    deals, price = write_batch(tmp_path, "1700000000011", batch)
    out = tmp_path / "features.parquet"
    assert main(["features", str(deals), str(price), "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["timestamp", "label"] + [f"f{i}" for i in range(605)]
    rows, counts = reference_features(batch, 600)
    assert counts["rows"] > 100 and counts["no_history"] > 100
    assert table.column("timestamp").to_pylist() == [r["timestamp"] for r in rows]
    assert table.column("label").to_pylist() == [r["label"] for r in rows]
    matrix = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(605)])
    np.testing.assert_allclose(matrix, np.array([r["features"] for r in rows]), atol=1e-4, rtol=0)
    printed = capsys.readouterr().out
    assert f"{counts['rows']} rows x 605 features" in printed and f"no_history {counts['no_history']}" in printed
    assert not spark.sparkContext._jsc.sc().isStopped()  # the CLI leaves a session it did not start


def test_cli_features_rejects_a_bad_file_by_line_and_field_and_writes_nothing(tmp_path, capsys):
    batch = generate_batch(1, n_ticks=50)
    deals, price = write_batch(tmp_path, "1700000000001", batch)
    lines = deals.read_text().splitlines()
    lines[2] = lines[2].replace('"buy"', '"sell"')
    deals.write_text("\n".join(lines) + "\n")
    out = tmp_path / "features.parquet"
    assert main(["features", str(deals), str(price), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(deals) in err and "line 3" in err and "field type" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted([deals.name, price.name])


def test_cli_features_missing_file_is_one_line(tmp_path, capsys):
    assert main(["features", str(tmp_path / "nope.csv"), str(tmp_path / "p.csv"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.csv" in err and "Traceback" not in err


def test_glue_keeps_the_staging_column_names():
    assert contract.DEAL_COLUMNS == staging.DEAL_COLUMNS
    assert contract.PRICE_COLUMNS == staging.PRICE_COLUMNS


@pytest.mark.spark
def test_partition_keys_send_each_batch_to_its_own_partition(spark):
    from pyspark.sql import functions as F

    from glue.feature_job import _murmur3_int, partition_keys

    values = [0, 1, -1, 42, 2**31 - 1, -(2**31)] + list(range(100, 160))
    hashed = spark.createDataFrame([(v,) for v in values], "v int").select(F.hash("v")).collect()
    assert [r[0] for r in hashed] == [_murmur3_int(v) for v in values]
    keys = partition_keys(13)
    parts = spark.createDataFrame([(k,) for k in keys], "k int").repartition(13, "k").rdd.glom().collect()
    assert [[row.k for row in part] for part in parts] == [[k] for k in keys]


def test_input_files_are_matched_whatever_way_spark_spells_them(tmp_path):
    from glue.feature_job import FeatureJobError, _role_of_file

    given = {str(tmp_path / "a b.csv"): ("1", "deals"), f"file://{tmp_path}/p.csv": ("1", "price")}
    spark_spelling = [f"file:{tmp_path}/a%20b.csv", f"file:///{tmp_path}/p.csv"]
    assert _role_of_file(spark_spelling, given) == dict(zip(spark_spelling, given.values(), strict=True))
    with pytest.raises(FeatureJobError, match="not one of the given files"):
        _role_of_file([*spark_spelling, f"file:{tmp_path}/other.csv"], given)
    with pytest.raises(FeatureJobError, match="not found"):
        _role_of_file(spark_spelling[:1], given)
