"""The staging contract's one strict reader and its writer (glue/staging.py, through core.staging)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_demo_dagster.core.staging import (
    PRICE_COLUMNS,
    StagingFormatError,
    deals_key,
    deals_rows,
    format_rows,
    js_number,
    parse_deals,
    parse_key,
    parse_prices,
    price_key,
    price_rows,
    read_batch,
    read_deals,
    read_prices,
)

# Lines as the seed's Node.js streamer wrote them: JSON.stringify per field, numbers as
# JavaScript prints them, MARKET_DELAY quoted "0", every field after a CHANGE of exactly 0
# quoted, and a missing value left empty.
SEED_PRICES = (
    b'1617184800123,5934.21,5970.21,5900.5,51.2,0.87,6001.3,5888.1,"09:00:00","TRADEABLE","0"\n'
    b'1617184801456,5934.209999999999,5970.209999999999,5900.5,"0","0","6001.3","5888.1","09:00:01","TRADEABLE","0"\n'
    b'1617184802001,5935,5971,,,,,,"09:00:02",,\n'
)
SEED_DEALS = (
    b'1617184800123,"loss","buy",20,20,5970.21,5950.21,5990.21\n'
    b'1617184801456,"profit","buy",20,20,5970.209999999999,5950.209999999999,5990.209999999999\n'
)
GOOD_DEAL = b'1617184802001,"loss","buy",20,20,5971,5951,5991'


def test_seed_batch_is_accepted_as_it_is():
    prices = read_prices(SEED_PRICES, "price-1.csv")
    assert prices.num_rows == 3
    assert prices.column("OFFER").to_pylist()[1] == 5970.209999999999
    assert prices.column("CHANGE").to_pylist() == [51.2, 0.0, None]
    assert prices.column("MARKET_DELAY").to_pylist() == [0.0, 0.0, None]
    assert prices.column("UPDATE_TIME").to_pylist() == ["09:00:00", "09:00:01", "09:00:02"]
    deals = read_deals(SEED_DEALS, "deals-1.csv")
    assert deals.column("loss_or_profit").to_pylist() == ["loss", "profit"]
    assert deals.column("timestamp").to_pylist() == [1617184800123, 1617184801456]
    # The seed joined lines with "\n": no line break after the last one.
    batch = read_batch(SEED_DEALS.rstrip(b"\n"), SEED_PRICES.rstrip(b"\n"))
    assert batch.deals.equals(deals) and batch.prices.equals(prices) and batch.notes == ()


def test_deals_in_resolution_order_are_valid():
    lines = SEED_DEALS.splitlines()
    assert read_batch(lines[1] + b"\n" + lines[0] + b"\n", SEED_PRICES).deals.num_rows == 2


def test_round_trip_is_exact():
    prices = read_prices(SEED_PRICES)
    again = read_prices(format_rows(price_rows(prices)))
    assert again.equals(prices)
    deals = read_deals(SEED_DEALS)
    assert read_deals(format_rows(deals_rows(deals))).equals(deals)


def test_writer_speaks_javascript():
    assert js_number(5934.0) == "5934"
    assert js_number(5934.209999999999) == "5934.209999999999"
    assert js_number(float("nan")) == ""
    assert format_rows([(1, "buy", None, 2.5)]) == b'1,"buy",,2.5\n'
    # JSON.stringify's escapes: quote, backslash, control characters; nothing else.
    assert format_rows([('a"b\\c\nd\te\x01é',)]) == b'"a\\"b\\\\c\\nd\\te\\u0001\xc3\xa9"\n'


def test_keys():
    assert deals_key(1700000000000) == "staging/deals-1700000000000.csv"
    assert parse_key(price_key("1700000000000")).kind == "price"
    assert parse_key("staging/deals-17.csv") is None
    assert parse_key("staging/notes.txt") is None


def _price_row(ts, bid="5935", offer="5971", update='"09:00:03"'):
    return f"{ts},{bid},{offer},,,,,,{update},,".encode()


@pytest.mark.parametrize(
    "data, line, field, words",
    [
        (SEED_DEALS + b'1617184802001,"loss","buy",20,20,abc,5950,5990\n', 3, "price", "not a number"),
        (SEED_DEALS + b'1617184802001,"draw","buy",20,20,5970,5950,5990\n', 3, "loss_or_profit", "'draw'"),
        (SEED_DEALS + b'1617184802001,"loss","sell",20,20,5970,5950,5990\n', 3, "type", "'sell'"),
        (SEED_DEALS + b'1617184802001,"loss","buy",20,20,5970,5950\n', 3, None, "expected 8 fields, found 7"),
        (SEED_DEALS + b'1617184802001,"loss","buy",20,20,5970,5950,5990,1\n', 3, None, "expected 8 fields, found 9"),
        (SEED_DEALS + b"1617184802001,,\n", 3, None, "expected 8 fields, found 3"),
        (
            b'1617184802001,"loss","buy",20,20,5970,5950,5990\n,"loss","buy",20,20,5970,5950,5990\n',
            2,
            "timestamp",
            "empty",
        ),  # fmt: skip
        (b'161718480,"loss","buy",20,20,5970,5950,5990\n', 1, "timestamp", "13 digits"),
        (b'1617184802001.5,"loss","buy",20,20,5970,5950,5990\n', 1, "timestamp", "13 digits, no fraction"),
        (b'1700000000000.0,"loss","buy",20,20,5970,5950,5990\n', 1, "timestamp", "13 digits, no fraction"),
        (b'1617184802001,"loss","buy",20,20,5970,5980,5990\n', 1, "stop_price", "not below price 5970"),
        (b'1617184802001,"loss","buy",20,20,5970,5950,5960\n', 1, "limit_price", "not above price 5970"),
        (b'1617184802001,"loss","buy",20,20,NaN,5950,5990\n', 1, "price", "nan is not a finite number"),
        (b'1617184802001,"loss","buy",20,20,Infinity,5950,5990\n', 1, "price", "not a finite number"),
        (b'1617184802001,"loss","buy",-20,20,5970,5950,5990\n', 1, "stop", "not > 0"),
        (
            b"timestamp,loss_or_profit,type,stop,limit,price,stop_price,limit_price\n" + SEED_DEALS,
            1,
            "timestamp",
            "a header row",
        ),  # fmt: skip
        (SEED_DEALS + SEED_DEALS.splitlines(keepends=True)[0], 3, "timestamp", "also the timestamp of line 1"),
        (SEED_DEALS + b"\n" + GOOD_DEAL + b"\n", 3, None, "blank line"),
        (SEED_DEALS + b'1617184802001,"loss","buy",20,20,5971,59', 3, None, "truncated last line"),
        (SEED_DEALS + b'1617184802001,"lo', 3, "loss_or_profit", "truncated last line"),
        (SEED_DEALS + b'1617184802001,"lo"ss","buy",20,20,5970,5950,5990\n', 3, "loss_or_profit", "quote"),
        (SEED_DEALS + b'1617184802001,lo"ss,"buy",20,20,5970,5950,5990\n', 3, "loss_or_profit", "quote"),
        (SEED_DEALS + b'1617184802001,"lo\\qss","buy",20,20,5970,5950,5990\n', 3, "loss_or_profit", "JSON"),
    ],
)
def test_bad_deals_name_file_line_and_field(data, line, field, words):
    with pytest.raises(StagingFormatError) as err:
        read_deals(data, "staging/deals-1617184900000.csv")
    e = err.value
    assert (e.line, e.field) == (line, field), str(e)
    assert str(e).startswith(f"staging/deals-1617184900000.csv line {line}")
    assert words in str(e)
    assert e.to_dict() == {"file": "staging/deals-1617184900000.csv", "line": line, "field": field, "reason": e.reason}


@pytest.mark.parametrize(
    "data, line, field, words",
    [
        (SEED_PRICES + _price_row(1617184803001, offer="oops") + b"\n", 4, "OFFER", "not a number"),
        (SEED_PRICES + _price_row(1617184803001, bid="NaN") + b"\n", 4, "BID", "nan is not a finite number"),
        (SEED_PRICES + _price_row(1617184803001, bid="nan") + b"\n", 4, "BID", "not a finite number"),
        (SEED_PRICES + _price_row(1617184803001, offer="inf") + b"\n", 4, "OFFER", "not a finite number"),
        (SEED_PRICES + _price_row(1617184803001, offer="1e400") + b"\n", 4, "OFFER", "not a finite number"),
        (SEED_PRICES + _price_row(1617184803001, bid="5935", offer="59710") + b"\n", 4, "OFFER", "absurd"),
        (SEED_PRICES + _price_row(1617184803001, bid="0.5", offer="5971") + b"\n", 4, "BID", "absurd"),
        (SEED_PRICES + _price_row(1617184803001, bid="-1", offer="5971") + b"\n", 4, "BID", "must be > 0"),
        (SEED_PRICES + _price_row(1617184803001, bid="5972", offer="5971") + b"\n", 4, "BID", "above OFFER"),
        (SEED_PRICES + _price_row(1617184802001) + b"\n", 4, "timestamp", "repeats the timestamp of line 3"),
        (SEED_PRICES + _price_row(1617184801999) + b"\n", 4, "timestamp", "is before the timestamp of line 3"),
        (b"1617184803001,,5935,,,,,,,,\n", 1, "BID", "required value is empty"),
        (SEED_PRICES + b"1617184803001,5935,5971\n", 4, None, "expected 11 fields, found 3"),
        (SEED_PRICES.replace(b"\n", b"\r", 1), 1, None, "carriage return (CR) without a line feed"),
        (
            b"timestamp,BID,OFFER,MID_OPEN,CHANGE,CHANGE_PCT,HIGH,LOW,UPDATE_TIME,MARKET_STATE,MARKET_DELAY\n"
            + SEED_PRICES,
            1,
            "timestamp",
            "a header row",
        ),  # fmt: skip
        (SEED_PRICES + b'1617184803001,5935,5971,,,,,,"09:0', 4, "UPDATE_TIME", "truncated last line"),
        (b"", None, None, "file is empty (0 bytes)"),
        (b" \n\n", None, None, "no rows"),
        (SEED_PRICES[:40] + b"\xff" + SEED_PRICES[40:], 1, None, "not UTF-8"),
    ],
)
def test_bad_prices_name_file_line_and_field(data, line, field, words):
    with pytest.raises(StagingFormatError) as err:
        read_prices(data, "price-x.csv")
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert words in str(err.value)


def test_deals_whose_ticks_are_not_in_the_price_file_are_refused():
    off_by_one = SEED_DEALS + GOOD_DEAL.replace(b"1617184802001", b"1617184802002") + b"\n"
    with pytest.raises(StagingFormatError) as err:
        read_batch(off_by_one, SEED_PRICES, "deals-x.csv", "price-x.csv")
    assert (err.value.source, err.value.line, err.value.field) == ("deals-x.csv", 3, "timestamp")
    assert "no row of price-x.csv has timestamp 1617184802002" in str(err.value)
    a_day_later = b"".join(
        str(int(line[:13]) + 86_400_000).encode() + line[13:] + b"\n" for line in SEED_DEALS.splitlines()
    )
    with pytest.raises(StagingFormatError, match="2 of 2 deals have no tick"):
        read_batch(a_day_later, SEED_PRICES, "deals-x.csv", "price-x.csv")


def test_byte_order_mark_and_windows_line_endings_are_accepted_and_said():
    plain = read_batch(SEED_DEALS + GOOD_DEAL + b"\n", SEED_PRICES)
    odd = read_batch(
        b"\xef\xbb\xbf" + (SEED_DEALS + GOOD_DEAL).replace(b"\n", b"\r\n"),
        b"\xef\xbb\xbf" + SEED_PRICES.replace(b"\n", b"\r\n"),
        "deals-x.csv",
        "price-x.csv",
    )
    assert odd.deals.equals(plain.deals) and odd.prices.equals(plain.prices)
    assert odd.notes == (
        "price-x.csv: starts with a UTF-8 byte-order mark (accepted)",
        "price-x.csv: Windows line endings (CRLF) on 3 line(s) (accepted)",
        "deals-x.csv: starts with a UTF-8 byte-order mark (accepted)",
        "deals-x.csv: Windows line endings (CRLF) on 2 line(s) (accepted)",
    )
    assert parse_deals(SEED_DEALS).notes == parse_prices(SEED_PRICES).notes == ()


def test_json_escapes_and_commas_inside_strings_are_read_exactly():
    data = format_rows([(1617184800123, 5934.21, 5970.21, None, None, None, None, None, 'say "hi", \\ ok\n', "a,b", 0)])
    assert b'\\"' in data and b"\\n" in data  # escaped as JSON, not RFC 4180's ""
    row = read_prices(data).to_pylist()[0]
    assert (row["UPDATE_TIME"], row["MARKET_STATE"]) == ('say "hi", \\ ok\n', "a,b")
    assert read_prices(b'1617184800123,5934.21,5970.21,,,,,,"",,\n').column("UPDATE_TIME").to_pylist() == [None]


# Price rows the contract accepts: times increasing, BID <= OFFER near one level, any text.
texts = st.one_of(st.none(), st.text(min_size=1, max_size=12))
levels = st.floats(min_value=20_000, max_value=40_000, allow_nan=False)
optional = st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(-99, 99))


@st.composite
def price_files(draw):
    n = draw(st.integers(1, 20))
    steps = draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n))
    ts, rows = 1_700_000_000_000, []
    for step in steps:
        ts += step
        bid = draw(levels)
        offer = bid + draw(st.floats(min_value=0, max_value=100))
        mid_open, high, low = draw(st.one_of(st.none(), levels)), draw(st.one_of(st.none(), levels)), draw(levels)
        rows.append((ts, bid, offer, mid_open, draw(optional), draw(optional), high, low, draw(texts), draw(texts),
                     draw(optional)))  # fmt: skip
    return rows


@settings(max_examples=200, deadline=None)
@given(price_files())
def test_what_the_writer_writes_the_reader_reads_back_exactly(rows):
    table = read_prices(format_rows(rows), "price-x.csv")
    got = price_rows(table)
    assert len(got) == len(rows)
    for want_row, got_row in zip(rows, got, strict=True):
        for name, want, value in zip(PRICE_COLUMNS, want_row, got_row, strict=True):
            if isinstance(want, (int, float)) and not isinstance(want, bool):
                assert value == want and not math.isnan(value), name
            else:
                assert value == want, name


def test_every_bad_kind_of_the_issue_is_named_by_file_line_and_field():
    from staging_kit import bad_variants, batch_bytes

    deals, price = batch_bytes(seed=1)
    read_batch(deals, price)  # the good batch passes
    for kind, (bad_deals, bad_price, at_fault, line, field) in bad_variants(deals, price).items():
        with pytest.raises(StagingFormatError) as err:
            read_batch(bad_deals, bad_price, "staging/deals-T.csv", "staging/price-T.csv")
        e = err.value
        assert (e.source, e.line, e.field) == (f"staging/{at_fault}-T.csv", line, field), f"{kind}: {e}"
        if kind == "truncated last line":
            assert "truncated last line" in e.reason


def test_the_reader_ships_with_glue_alone():
    # The Glue job ships glue/ and what it imports: no Dagster, pydantic, boto3 or the rest of the project.
    import subprocess
    import sys

    code = (
        "import sys, glue.staging, glue.batch, glue.feature_job, glue.files\n"
        "print(sorted(m for m in ('dagster', 'pydantic', 'boto3', 'botocore', 'ml_demo_dagster', 'pyspark')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
