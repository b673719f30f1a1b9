"""The feature job's three faces (Spark, single-process pyarrow, `ml-demo features`) against
the brute-force reference, on seed-format files; and what they do with bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from feature_reference import Batch, generate_batch, kernel_inputs, reference_features, write_batch

from glue import contract
from glue.contract import BatchInput
from glue.feature_job import BatchDataError, FeatureJobError, build_features
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
    staging.read_batch(deals.read_bytes(), price.read_bytes(), str(deals), str(price))  # accepted as it is
    table = staging.read_prices(price.read_bytes(), str(price))
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
def test_spark_job_replaces_old_output_and_spreads_many_batches_over_few_tasks(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are resolved on the driver
    inputs = _batches(tmp_path, seeds=range(20, 27))
    batches = [BatchInput(b.batch_id, os.path.relpath(b.deals_uri), os.path.relpath(b.price_uri)) for b, _ in inputs]
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00099.parquet").write_bytes(b"stale")
    (out / "_SUCCESS").touch()
    report = build_features(spark, batches, "out", HISTORY)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS"] + [f"part-{i:05d}.parquet" for i in range(7)]
    rows = _by_batch(out)
    for batch_input, batch in inputs:
        assert report.batches[batch_input.batch_id] == _assert_equals_reference(
            rows[batch_input.batch_id], batch, HISTORY
        )
    assert list(report.batches) == [b.batch_id for b in batches]


@pytest.mark.spark
def test_spark_job_reports_a_bad_batch_in_one_line_and_leaves_no_output(spark, tmp_path):
    inputs = _batches(tmp_path, seeds=[30, 31])
    bad = Path(inputs[1][0].price_uri)
    lines = bad.read_text().splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[1], "not-a-number", 1)
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(FeatureJobError) as caught:
        build_features(spark, [b for b, _ in inputs], str(out), HISTORY)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and str(bad) in message and "batch 31" in message
    assert "line 5 field BID" in message and "not a number" in message
    assert "Traceback" not in message and "Py4J" not in message
    assert isinstance(caught.value, BatchDataError)  # bad data: not worth a retry
    assert caught.value.problems["31"] == {"file": str(bad), "line": 5, "field": "BID",
                                           "reason": "'not-a-number' is not a number"}  # fmt: skip
    assert list(out.iterdir()) == []  # no _SUCCESS, no part files


@pytest.mark.spark
def test_ingest_and_the_job_agree_on_a_fractional_timestamp(spark, tmp_path):
    # Once accepted by ingest and refused by the job (two parsers); now one reader refuses it in both.
    ((batch, _),) = _batches(tmp_path, seeds=[32])
    price = Path(batch.price_uri)
    lines = price.read_text().splitlines()
    lines[0] = lines[0].replace(lines[0].split(",")[0], lines[0].split(",")[0] + ".0", 1)
    price.write_text("\n".join(lines) + "\n")
    with pytest.raises(staging.StagingFormatError) as ingest_says:
        staging.read_batch(Path(batch.deals_uri).read_bytes(), price.read_bytes(), batch.deals_uri, batch.price_uri)
    with pytest.raises(BatchDataError) as job_says:
        build_features(spark, [batch], str(tmp_path / "out"), HISTORY)
    assert job_says.value.problems["32"] == ingest_says.value.to_dict()
    assert ingest_says.value.to_dict()["line"] == 1 and ingest_says.value.field == "timestamp"


@pytest.mark.spark
def test_a_failure_that_is_not_bad_data_is_one_line_and_not_a_data_error(spark, tmp_path):
    ((batch, _),) = _batches(tmp_path, seeds=[33])
    Path(batch.price_uri).unlink()  # storage trouble, not a contract violation: worth a retry
    with pytest.raises(FeatureJobError) as caught:
        build_features(spark, [batch], str(tmp_path / "out"), HISTORY)
    assert not isinstance(caught.value, BatchDataError)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith("batch 33: FileNotFoundError")


def test_spark_job_refuses_inputs_it_cannot_tell_apart(tmp_path):
    a = BatchInput("1", str(tmp_path / "d.csv"), str(tmp_path / "p.csv"))
    with pytest.raises(FeatureJobError, match="no batches"):
        build_features(None, [], str(tmp_path / "o"), HISTORY)
    with pytest.raises(FeatureJobError, match="not unique"):
        build_features(None, [a, BatchInput("1", "x", "y")], str(tmp_path / "o"), HISTORY)
    with pytest.raises(FeatureJobError, match="given twice"):
        build_features(None, [a, BatchInput("2", f"file://{tmp_path}/d.csv", "y")], str(tmp_path / "o"), HISTORY)
