"""The state-machine builder: Amazon States Language from request builders (DESIGN §4.7).

Pure: no Dagster, no AWS. The exporter (ml_demo_dagster/stepfunctions.py) walks the asset
graph and asks this module for the states of each asset that runs on AWS; this module
chains them between a prologue (batch key, completeness check, claim, run lock) and an
epilogue (release, success), with retries on transient errors and a failure path that
releases the lock and ends in a Fail state carrying the cause.

Requests come from the same builders the aws target sends to boto3
(ml_demo_dagster/aws/requests.py). Values known only at run time (the batch T, the best
training job's artifacts) are passed to a builder as sentinels; every string the sentinels
end up in becomes a `States.Format` over the state's input, so the request in the state
machine is the builder's request with the run's values filled in. A string that depends
on a run-time value in a way a state machine cannot compute (a hash, say) is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Two sets of sentinels: a string that differs between the two builds depends on a run-time
# value. 13 digits, like a batch key, so that builders that check a batch id accept them.
_SENTINELS = ("7000000000001", "7000000000002", "7000000000003", "7000000000004")
_SENTINELS_B = ("8100000000001", "8100000000002", "8100000000003", "8100000000004")
# Short values (the attempt number: up to 3 digits) stand in as 3 characters, so that a name
# that fits with them fits at run time, and one that does not is refused at export.
_SHORT = ("zq1", "zq2", "zq3", "zq4")
_SHORT_B = ("zw1", "zw2", "zw3", "zw4")

OPTIMIZED = "arn:aws:states:::"
SDK = "arn:aws:states:::aws-sdk:"

# Errors worth retrying: throttling and the services' own transient faults. The names are
# Step Functions' (<Service>.<Exception> for service integrations).
TRANSIENT_ERRORS = {
    "glue": ["Glue.ThrottlingException", "Glue.InternalServiceException", "Glue.OperationTimeoutException",
             "Glue.ConcurrentRunsExceededException"],
    "sagemaker": ["SageMaker.ThrottlingException", "SageMaker.InternalFailure", "SageMaker.ServiceUnavailable",
                  "SageMaker.ResourceLimitExceededException"],
    "s3": ["S3.SlowDownException", "S3.InternalErrorException", "S3.ServiceUnavailableException"],
    "dynamodb": ["DynamoDB.ThrottlingException", "DynamoDB.ProvisionedThroughputExceededException",
                 "DynamoDB.InternalServerErrorException", "DynamoDB.RequestLimitExceededException"],
    "sfn": ["Sfn.ThrottlingException", "Sfn.SfnException"],
}  # fmt: skip


class SfnExportError(ValueError):
    """The graph or a request cannot be expressed as a state machine; the message says why."""


def retry(service: str, attempts: int = 6) -> list[dict[str, Any]]:
    """Exponential backoff with full jitter on the service's transient errors."""
    return [{
        "ErrorEquals": TRANSIENT_ERRORS[service],
        "IntervalSeconds": 2,
        "BackoffRate": 2.0,
        "MaxAttempts": attempts,
        "MaxDelaySeconds": 120,
        "JitterStrategy": "FULL",
    }]  # fmt: skip


# --- run-time values in builder requests ------------------------------------------------------


def _format_escape(text: str) -> str:
    """A literal part of a States.Format template: ' { } and \\ are escaped with a backslash."""
    return re.sub(r"([\\'{}])", r"\\\1", text)


def _split(value: str, sentinels: Sequence[str]) -> tuple[list[str], list[int]]:
    """Literal pieces and, between them, the index of the sentinel that stood there."""
    pattern = re.compile("|".join(re.escape(s) for s in sentinels))
    pieces, order, last = [], [], 0
    for m in pattern.finditer(value):
        pieces.append(value[last : m.start()])
        order.append(sentinels.index(m.group()))
        last = m.end()
    pieces.append(value[last:])
    return pieces, order


def _parametrize(a: Any, b: Any, paths: Sequence[str], where: str,
                 sentinels: tuple[Sequence[str], Sequence[str]] = (_SENTINELS, _SENTINELS_B)) -> tuple[bool, Any]:  # fmt: skip
    """Merge two builds of one request: (is dynamic, value or path expression)."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            raise SfnExportError(f"{where}: the request's shape depends on a run-time value")
        out = {}
        for key in a:
            dynamic, value = _parametrize(a[key], b[key], paths, f"{where}.{key}", sentinels)
            out[f"{key}.$" if dynamic else key] = value
        return False, out
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            raise SfnExportError(f"{where}: the request's shape depends on a run-time value")
        items = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            dynamic, value = _parametrize(x, y, paths, f"{where}[{i}]", sentinels)
            if dynamic:
                raise SfnExportError(f"{where}[{i}]: a run-time value cannot stand alone in a list")
            items.append(value)
        return False, items
    if a == b:
        return False, a
    if not isinstance(a, str) or not isinstance(b, str):
        raise SfnExportError(f"{where}: a non-text value ({a!r}) depends on a run-time value")
    pieces, order = _split(a, sentinels[0])
    rebuilt = "".join(p + (sentinels[1][i] if k < len(order) else "") for k, (p, i) in
                      enumerate(zip(pieces, order + [0], strict=True)))  # fmt: skip
    if not order or rebuilt != b:
        raise SfnExportError(
            f"{where}: {a!r} depends on a run-time value in a way a state machine cannot compute "
            "(shorten project.name or project.environment if a name was cut and hashed)"
        )
    if pieces == ["", ""]:
        return True, paths[order[0]]
    template = "{}".join(_format_escape(p) for p in pieces)
    return True, f"States.Format('{template}', {', '.join(paths[i] for i in order)})"


def with_runtime_values(build: Callable[..., dict[str, Any]], values: Mapping[str, str],
                        short: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    """`build(**kwargs)` as Task Parameters, each kwarg given by its JSONPath in `values`
    (those named in `short` are at most 3 characters at run time)."""
    names = list(values)
    if len(names) > len(_SENTINELS):
        raise SfnExportError(f"at most {len(_SENTINELS)} run-time values per request")
    a = [(_SHORT if n in short else _SENTINELS)[i] for i, n in enumerate(names)]
    b = [(_SHORT_B if n in short else _SENTINELS_B)[i] for i, n in enumerate(names)]
    first, second = build(**dict(zip(names, a, strict=True))), build(**dict(zip(names, b, strict=True)))
    return _parametrize(first, second, [values[n] for n in names], "request", (a, b))[1]


# --- fragments ------------------------------------------------------------------------------


@dataclass
class Fragment:
    """A run of states with one way in (`start`) and one way on: each state listed in `exits`
    has its `Next` (a Choice: its `Default`) set to whatever follows the fragment. Task
    states get the failure catch."""

    name: str
    start: str
    states: dict[str, dict[str, Any]]
    exits: list[str]
    source: str = ""  # the asset that contributed it

    def __post_init__(self) -> None:
        missing = [s for s in [self.start, *self.exits] if s not in self.states]
        if missing:
            raise SfnExportError(f"fragment {self.name}: no state {missing[0]!r}")

    def renamed(self, prefix: str) -> Fragment:
        """The same states named `<prefix><name>` (two assets with the same kind of states)."""
        own = set(self.states)

        def fix(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: (prefix + v if k in ("Next", "Default") and v in own else fix(v)) for k, v in node.items()}
            if isinstance(node, list):
                return [fix(v) for v in node]
            return node

        return Fragment(self.name, prefix + self.start, {prefix + k: fix(v) for k, v in self.states.items()},
                        [prefix + e for e in self.exits], self.source)  # fmt: skip


@dataclass
class MachineSettings:
    """The prologue's and epilogue's names and settings, from the config."""

    lock_table: str
    bucket: str
    deals_key: Callable[[str], str]
    price_key: Callable[[str], str]
    lock_wait_seconds: int
    comment: str
    notes: list[str] = field(default_factory=list)


FAILURE = "ReleaseLockAfterFailure"
ERROR_PATH = "$.error"
CLAIM_PATH = "$.claim"
# The batch key and the attempt number, for the states after the prologue.
BATCH = "$.batch"
ATTEMPT = "$.claim.attempt"


def _catch_all() -> list[dict[str, Any]]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": ERROR_PATH, "Next": FAILURE}]


def task(resource: str, parameters: dict[str, Any], service: str, *, result_path: str | None = None,
         result_selector: dict[str, Any] | None = None, comment: str = "") -> dict[str, Any]:  # fmt: skip
    state: dict[str, Any] = {"Type": "Task", "Resource": resource, "Parameters": parameters}
    if comment:
        state["Comment"] = comment
    if result_selector is not None:
        state["ResultSelector"] = result_selector
    state["ResultPath"] = result_path
    state["Retry"] = retry(service)
    return state


def _key_item(pk: dict[str, Any]) -> dict[str, Any]:
    return {"pk": pk}


def prologue(s: MachineSettings, first_step: str) -> dict[str, dict[str, Any]]:
    """Batch key T from the input, completeness, one execution per batch, one run at a time."""
    deals_pattern = s.deals_key("*")
    price_pattern = s.price_key("*")
    deals_prefix, deals_suffix = deals_pattern.split("*")
    t_from_key = (
        f"States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.key, "
        f"'{_format_escape(deals_prefix[-1])}'), 1), '{_format_escape(deals_suffix[0])}'), 0)"
    )
    for pattern in (deals_pattern, price_pattern):
        prefix, suffix = pattern.split("*")
        if prefix.count(prefix[-1]) != 1 or suffix.count(suffix[0]) != 1 or prefix[-1] != deals_prefix[-1]:
            raise SfnExportError(f"staging key {pattern!r}: the batch key cannot be cut out of it at run time")
    me = {"S.$": "$$.Execution.Id"}
    lock = {"S": "lock"}
    claim = {"S.$": "States.Format('batch#{}', $.batch)"}
    return {
        "ReadBatchKey": {
            "Type": "Choice",
            "Comment": 'The input is {"batch": T}, or {"key": <staging key>} from the S3 event',
            "Choices": [
                {"Variable": "$.batch", "IsPresent": True, "Next": "ListDealsFile"},
                {
                    "Or": [
                        {"Variable": "$.key", "StringMatches": deals_pattern},
                        {"Variable": "$.key", "StringMatches": price_pattern},
                    ],
                    "Next": "BatchFromKey",
                },
            ],  # fmt: skip
            "Default": "NotABatchFile",
        },
        "NotABatchFile": {
            "Type": "Fail",
            "Error": "NotABatchFile",
            "Cause": f"input has neither batch nor a key like {deals_pattern} or {price_pattern}",
        },  # fmt: skip
        "BatchFromKey": {"Type": "Pass", "Parameters": {"batch.$": t_from_key}, "Next": "ListDealsFile"},
        "ListDealsFile": {
            **task(
                f"{SDK}s3:listObjectsV2",
                {"Bucket": s.bucket, "Prefix.$": _key_format(s.deals_key), "MaxKeys": 1},
                "s3",
                result_path="$.complete.deals",
                result_selector={"count.$": "$.KeyCount"},
                comment="Batch completeness check: both files of the batch exist",
            ),  # fmt: skip
            "Next": "ListPriceFile",
        },
        "ListPriceFile": {
            **task(
                f"{SDK}s3:listObjectsV2",
                {"Bucket": s.bucket, "Prefix.$": _key_format(s.price_key), "MaxKeys": 1},
                "s3",
                result_path="$.complete.price",
                result_selector={"count.$": "$.KeyCount"},
            ),  # fmt: skip
            "Next": "IsBatchComplete",
        },
        "IsBatchComplete": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.complete.deals.count", "NumericEquals": 1},
                        {"Variable": "$.complete.price.count", "NumericEquals": 1},
                    ],
                    "Next": "ClaimBatch",
                }
            ],  # fmt: skip
            "Default": "BatchIncomplete",
        },
        "BatchIncomplete": {"Type": "Succeed", "Comment": "The other file's event starts the batch when it lands"},
        "ClaimBatch": {
            **task(
                f"{OPTIMIZED}dynamodb:updateItem",
                {
                    "TableName": s.lock_table,
                    "Key": {"pk": claim},
                    "UpdateExpression": "SET execution = :me ADD attempts :one",
                    "ConditionExpression": "attribute_not_exists(execution)",
                    "ExpressionAttributeValues": {":me": me, ":one": {"N": "1"}},
                    "ReturnValues": "UPDATED_NEW",
                },
                "dynamodb",
                result_path=CLAIM_PATH,
                result_selector={"attempt.$": "$.Attributes.attempts.N"},
                comment="One execution per batch, however many events the batch raised; the claim counts "
                "the batch's attempts, and the attempt number tells this run's SageMaker resources apart",
            ),  # fmt: skip
            "Catch": [
                {
                    "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
                    "ResultPath": None,
                    "Next": "BatchAlreadyClaimed",
                }
            ],  # fmt: skip
            "Next": "AcquireRunLock",
        },
        "BatchAlreadyClaimed": {"Type": "Succeed", "Comment": "Another execution has this batch"},
        "AcquireRunLock": {
            **task(
                f"{OPTIMIZED}dynamodb:putItem",
                {
                    "TableName": s.lock_table,
                    "Item": {"pk": lock, "holder": me, "batch": {"S.$": "$.batch"}},
                    "ConditionExpression": "attribute_not_exists(pk) OR holder = :me",
                    "ExpressionAttributeValues": {":me": me},
                },
                "dynamodb",
                comment="One run at a time: a batch that lands while a run is busy waits here",
            ),  # fmt: skip
            "Catch": [
                {
                    "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
                    "ResultPath": None,
                    "Next": "ReadLockHolder",
                },
                *_release_claim_catch(),
            ],
            "Next": first_step,
        },
        "ReadLockHolder": {
            **task(
                f"{OPTIMIZED}dynamodb:getItem",
                {"TableName": s.lock_table, "Key": {"pk": lock}, "ConsistentRead": True},
                "dynamodb",
                result_path="$.lock",
                result_selector={"holder.$": "$.Item.holder.S"},
            ),  # fmt: skip
            "Catch": [
                {"ErrorEquals": ["States.Runtime"], "ResultPath": None, "Next": "AcquireRunLock"},  # released meanwhile
                *_release_claim_catch(),
            ],
            "Next": "DescribeLockHolder",
        },
        "DescribeLockHolder": {
            **task(
                f"{SDK}sfn:describeExecution",
                {"ExecutionArn.$": "$.lock.holder"},
                "sfn",
                result_path="$.lock.status",
                result_selector={"value.$": "$.Status"},
                comment="A holder that is no longer running (stopped, timed out) left the lock behind",
            ),  # fmt: skip
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "TakeOverRunLock"}],
            "Next": "IsLockHolderRunning",
        },
        "IsLockHolderRunning": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.lock.status.value", "StringEquals": "RUNNING", "Next": "WaitForRunLock"}],
            "Default": "TakeOverRunLock",
        },
        "WaitForRunLock": {"Type": "Wait", "Seconds": s.lock_wait_seconds, "Next": "AcquireRunLock"},
        "TakeOverRunLock": {
            **task(
                f"{OPTIMIZED}dynamodb:updateItem",
                {
                    "TableName": s.lock_table,
                    "Key": {"pk": lock},
                    "UpdateExpression": "SET holder = :me, batch = :batch",
                    "ConditionExpression": "holder = :old",
                    "ExpressionAttributeValues": {
                        ":me": me,
                        ":old": {"S.$": "$.lock.holder"},
                        ":batch": {"S.$": "$.batch"},
                    },
                },
                "dynamodb",
            ),  # fmt: skip
            "Catch": [
                {
                    "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
                    "ResultPath": None,
                    "Next": "AcquireRunLock",
                },
                *_release_claim_catch(),
            ],
            "Next": first_step,
        },
        "ReleaseClaimAfterLockFailure": {
            **task(f"{OPTIMIZED}dynamodb:updateItem", release_claim(s), "dynamodb"),
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "PipelineFailed"}],
            "Next": "PipelineFailed",
        },
    }


def release_claim(s: MachineSettings) -> dict[str, Any]:
    """The claim is let go (its attempt count stays), so the batch can be run again."""
    return {
        "TableName": s.lock_table,
        "Key": {"pk": {"S.$": "States.Format('batch#{}', $.batch)"}},
        "UpdateExpression": "REMOVE execution",
        "ConditionExpression": "execution = :me",
        "ExpressionAttributeValues": {":me": {"S.$": "$$.Execution.Id"}},
    }


def _release_claim_catch() -> list[dict[str, Any]]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": ERROR_PATH, "Next": "ReleaseClaimAfterLockFailure"}]


def _key_format(key: Callable[[str], str]) -> str:
    sentinel = _SENTINELS[0]
    pieces, order = _split(key(sentinel), [sentinel])
    if order != [0]:
        raise SfnExportError(f"staging key {key(sentinel)!r} must contain the batch key once")
    return f"States.Format('{_format_escape(pieces[0])}{{}}{_format_escape(pieces[1])}', $.batch)"


def epilogue(s: MachineSettings) -> dict[str, dict[str, Any]]:
    """Release the lock on success; on failure release lock and claim, then fail with the cause."""
    lock_by_me = {
        "TableName": s.lock_table,
        "Key": {"pk": {"S": "lock"}},
        "ConditionExpression": "holder = :me",
        "ExpressionAttributeValues": {":me": {"S.$": "$$.Execution.Id"}},
    }
    return {
        "ReleaseRunLock": {
            **task(f"{OPTIMIZED}dynamodb:deleteItem", lock_by_me, "dynamodb"),
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.release_error", "Next": "BatchDone"}],
            "Next": "BatchDone",
        },
        "BatchDone": {"Type": "Succeed"},
        FAILURE: {
            **task(
                f"{OPTIMIZED}dynamodb:deleteItem",
                lock_by_me,
                "dynamodb",
                comment="A failed run frees the lock for the next batch",
            ),  # fmt: skip
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "ReleaseClaimAfterFailure"}],
            "Next": "ReleaseClaimAfterFailure",
        },
        "ReleaseClaimAfterFailure": {
            **task(
                f"{OPTIMIZED}dynamodb:updateItem",
                release_claim(s),
                "dynamodb",
                comment='The batch can be run again: start an execution with {"batch": T}',
            ),  # fmt: skip
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "PipelineFailed"}],
            "Next": "PipelineFailed",
        },
        # The failed step's error name goes in the cause: a Fail state's own error may not be a
        # States.* name (States.TaskFailed, States.Timeout, ...).
        "PipelineFailed": {
            "Type": "Fail",
            "Error": "PipelineFailed",
            "CausePath": f"States.Format('{{}}: {{}}', {ERROR_PATH}.Error, {ERROR_PATH}.Cause)",
        },
    }


def assemble(settings: MachineSettings, fragments: Sequence[Fragment]) -> dict[str, Any]:
    """The whole definition: prologue, the fragments in order, epilogue."""
    if not fragments:
        raise SfnExportError("no asset runs on AWS: nothing to put in a state machine")
    states: dict[str, dict[str, Any]] = {}
    taken = set(prologue(settings, "x")) | set(epilogue(settings))
    unique = []
    for fragment in fragments:
        if taken & set(fragment.states):
            fragment = fragment.renamed(f"{fragment.source or fragment.name}.")
        taken |= set(fragment.states)
        unique.append(fragment)
    fragments = unique
    states.update(prologue(settings, fragments[0].start))
    for i, fragment in enumerate(fragments):
        following = fragments[i + 1].start if i + 1 < len(fragments) else "ReleaseRunLock"
        for name, state in fragment.states.items():
            if name in states:
                raise SfnExportError(f"state {name!r} of {fragment.source or fragment.name} is defined twice")
            state = dict(state)
            if name in fragment.exits:
                state["Default" if state["Type"] == "Choice" else "Next"] = following
            if state["Type"] in ("Task", "Parallel", "Map"):
                state["Catch"] = [*state.get("Catch", []), *_catch_all()]
            if fragment.source:
                state.setdefault("Comment", f"asset {fragment.source}")
            states[name] = state
    states.update(epilogue(settings))
    comment = settings.comment + "".join(f" {n}" for n in settings.notes)
    return {"Comment": comment, "StartAt": "ReadBatchKey", "States": states}
