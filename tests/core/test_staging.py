import pytest

from ml_demo_dagster.core.staging import (
    StagingFormatError,
    deals_key,
    deals_rows,
    format_rows,
    js_number,
    parse_key,
    price_key,
    price_rows,
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


def test_keys():
    assert deals_key(1700000000000) == "staging/deals-1700000000000.csv"
    assert parse_key(price_key("1700000000000")).kind == "price"
    assert parse_key("staging/deals-17.csv") is None
    assert parse_key("staging/notes.txt") is None


@pytest.mark.parametrize(
    "data, line, field, words",
    [
        (SEED_DEALS + b'1617184802001,"loss","buy",20,20,abc,5950,5990\n', 3, "price", "not a number"),
        (SEED_DEALS + b'1617184802001,"draw","buy",20,20,5970,5950,5990\n', 3, "loss_or_profit", "'draw'"),
        (SEED_DEALS + b'1617184802001,"loss","sell",20,20,5970,5950,5990\n', 3, "type", "'sell'"),
        (SEED_DEALS + b'1617184802001,"loss","buy",20,20,5970,5950\n', 3, None, "expected 8 fields"),
        (
            b'1617184802001,"loss","buy",20,20,5970,5950,5990\n,"loss","buy",20,20,5970,5950,5990\n',
            2,
            "timestamp",
            "empty",
        ),
        (b'161718480,"loss","buy",20,20,5970,5950,5990\n', 1, "timestamp", "13 digits"),
        (b'1617184802001.5,"loss","buy",20,20,5970,5950,5990\n', 1, "timestamp", "whole number"),
        (b'1617184802001,"loss","buy",20,20,5970,5980,5990\n', 1, "stop_price", "below price"),
    ],
)
def test_bad_deals_name_file_line_and_field(data, line, field, words):
    with pytest.raises(StagingFormatError) as err:
        read_deals(data, "staging/deals-1617184900000.csv")
    e = err.value
    assert (e.line, e.field) == (line, field)
    assert str(e).startswith(f"staging/deals-1617184900000.csv line {line}")
    assert words in str(e)


def test_bad_prices_name_file_line_and_field():
    bad = SEED_PRICES + b'1617184803001,5935,oops,,,,,,"09:00:03",,\n'
    with pytest.raises(StagingFormatError) as err:
        read_prices(bad, "price-x.csv")
    assert (err.value.line, err.value.field) == (4, "OFFER")
    with pytest.raises(StagingFormatError, match="empty"):
        read_prices(b"", "price-x.csv")
    with pytest.raises(StagingFormatError, match="line 1 field BID: required value is empty"):
        read_prices(b"1617184803001,,5935,,,,,,,,\n", "price-x.csv")
