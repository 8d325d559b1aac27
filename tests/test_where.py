"""`--where`, `--status` and `--query` as MongoDB filters: what a user types, what it selects."""

import pytest

from recorder.errors import RecorderError
from recorder.where import FilterError, parse_query, parse_where, run_filter, typed_value


@pytest.mark.parametrize("expr, expected", [
    ("config.lr<0.01", {"config.lr": {"$lt": 0.01}}),
    ("config.lr<=0.01", {"config.lr": {"$lte": 0.01}}),
    ("config.lr>1e-3", {"config.lr": {"$gt": 0.001}}),
    ("config.lr>=3", {"config.lr": {"$gte": 3}}),
    ("config.opt=adam", {"config.opt": "adam"}),
    ("config.opt==adam", {"config.opt": "adam"}),
    ("config.opt!=adam", {"config.opt": {"$ne": "adam"}}),
    (" config.opt.name = sgd ", {"config.opt.name": "sgd"}),
    ("config.tag=a=b", {"config.tag": "a=b"}),
    ("config.x>=-2", {"config.x": {"$gte": -2}}),
])
def test_operators(expr, expected):
    assert parse_where(expr) == expected


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("-3", -3), ("0.5", 0.5), ("1e-4", 1e-4),
    ("true", True), ("False", False), ("null", None), ("None", None),
    ("sgd", "sgd"), ("'3'", "3"), ('"true"', "true"), ('"null"', "null"), ("''", ""),
    ("it's", "it's"),
])
def test_values_are_typed_unless_quoted(text, value):
    result = typed_value(text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize("expr", ["config.lr", "<3", "config lr<3", "config.lr=<3",
                                  "config.lr<>3", ""])
def test_bad_where_names_the_expression(expr):
    with pytest.raises(FilterError, match="--where") as info:
        parse_where(expr)
    assert isinstance(info.value, RecorderError)
    assert "\n" not in str(info.value)


def test_query_is_json_object():
    assert parse_query('{"config.lr": {"$lt": 0.01}}') == {"config.lr": {"$lt": 0.01}}
    for bad in ("{bad", "[1]", "3", ""):
        with pytest.raises(FilterError, match="--query"):
            parse_query(bad)


def test_filters_and_together():
    assert run_filter() == {}
    assert run_filter(status="failed") == {"status": "FAILED"}
    assert run_filter(experiment="mnist", status="Completed", where=["config.lr<0.1"],
                      query='{"seed": 3}') == {"$and": [
        {"experiment.name": "mnist"}, {"status": "COMPLETED"},
        {"config.lr": {"$lt": 0.1}}, {"seed": 3}]}
    with pytest.raises(FilterError, match="COMPLETED"):
        run_filter(status="done")


def test_filters_select_on_a_mongo_collection():
    mongomock = pytest.importorskip("mongomock")
    runs = mongomock.MongoClient().db.runs
    runs.insert_many([{"_id": 1, "config": {"lr": 0.001, "code": 1}},
                      {"_id": 2, "config": {"lr": 0.01, "code": "1"}},
                      {"_id": 3, "config": {"lr": 0.1, "code": None}}])

    def ids(*where):
        return sorted(d["_id"] for d in runs.find(run_filter(where=list(where))))

    assert ids("config.lr<0.01") == [1]
    assert ids("config.lr<=0.01") == [1, 2]
    assert ids("config.lr>0.01") == [3]
    assert ids("config.lr>=0.01") == [2, 3]
    assert ids("config.lr!=0.01") == [1, 3]
    assert ids("config.lr>0.001", "config.lr<0.1") == [2]
    assert ids("config.code=1") == [1]
    assert ids("config.code='1'") == [2]
    assert ids("config.code=null") == [3]
